"""The operator's commands (connector.ops): status, replay, resync, reindex, verify, slot."""

from __future__ import annotations

import argparse


def status(args: argparse.Namespace) -> int:
    import json

    from connector.config import load_settings
    from connector.ops.status import collect_status, render

    status = collect_status(load_settings(args.config))
    print(json.dumps(status.as_dict(), indent=2) if args.json else render(status))
    return 0


def replay(args: argparse.Namespace) -> int:
    from connector.config import load_settings
    from connector.core.lsn import Lsn
    from connector.ops.replay import rewind

    settings = load_settings(args.config)
    lsn = Lsn.parse(args.from_lsn)  # checked by argparse
    confirmed = rewind(settings, lsn)
    print(f"checkpoint moved back to {lsn} (the slot holds changes from {confirmed} on).")
    print("Start the connector (`connector run`): it re-applies every change after that LSN.")
    return 0


def resync(args: argparse.Namespace) -> int:
    from connector.config import load_settings
    from connector.embed import make_embedder
    from connector.ops.resync import resync
    from connector.sink.redis_client import client_for

    settings = load_settings(args.config)
    embedder = make_embedder(settings.embedding, client_for(settings.redis))
    try:
        report = resync(settings, embedder, args.table)
    finally:
        embedder.close()
    print(
        f"resync at {report.at}: {report.rows} rows copied, {report.embedded} chunks embedded "
        "(the others kept their vectors); rows the tables no longer have are hidden and "
        "collected"
    )
    return 0


def reindex(args: argparse.Namespace) -> int:
    from connector.config import load_settings
    from connector.embed import make_embedder
    from connector.ops.reindex import ReindexOptions, reindex

    settings = load_settings(args.config)
    embedder = make_embedder(settings.embedding)  # its model only: the daemon embeds
    try:
        asked = ReindexOptions(args.dry_run, args.cancel, args.force, wait=not args.no_wait)
        return reindex(settings, embedder, args.table, asked)
    finally:
        embedder.close()


def verify(args: argparse.Namespace) -> int:
    from connector.config import load_settings
    from connector.embed import make_embedder
    from connector.ops.verify import checkpoint_problem, repair, verify
    from connector.sink.redis_client import client_for

    settings = load_settings(args.config)
    drifts = verify(settings, args.table)
    for drift in drifts:
        print(drift.summary())
    problem = checkpoint_problem(settings)
    if problem:
        print(f"checkpoint: {problem}")
    if all(drift.clean for drift in drifts):
        return 1 if problem else 0
    if not args.repair:
        print("drift found: run `connector verify --repair` to fix it")
        return 1
    embedder = make_embedder(settings.embedding, client_for(settings.redis))
    try:
        repair(settings, embedder, drifts)
    finally:
        embedder.close()
    after = verify(settings, args.table)
    for drift in after:
        print("after repair: " + drift.summary())
    return 0 if all(drift.clean for drift in after) and not problem else 1


def slot_drop(args: argparse.Namespace) -> int:
    from connector.config import load_settings
    from connector.ops.slot import drop_slot

    settings = load_settings(args.config)
    if drop_slot(settings, args.force):
        print(f"dropped slot {settings.postgres.slot} and its checkpoint")
    else:
        print(f"slot {settings.postgres.slot} does not exist")
    return 0


def slot_take_over(args: argparse.Namespace) -> int:
    from connector.config import load_settings
    from connector.ops.slot import take_over

    settings = load_settings(args.config)
    for line in take_over(settings, args.index, args.force):
        print(line)
    print(
        f"`connector run` with this configuration (slot {settings.postgres.slot}) now writes "
        "them; with no checkpoint of its own it copies their tables from a snapshot first "
        "(unchanged rows keep their vectors). Drop the old slot with `connector slot drop` "
        "and its configuration when nothing uses it: it holds WAL on the server"
    )
    return 0
