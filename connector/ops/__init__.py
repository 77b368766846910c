"""Operator commands: status, replay, resync, verify (and repair), slot drop.

They reuse `source` and `sink` (and `flow`'s applier and copy, for resync), never the daemon:
none of them starts the streaming machinery. Each module is one command of the CLI.
"""
