"""What users get from the repository itself: compose file, example config, entry points."""

import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_compose_file_names_the_right_services() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "connector", "serve"}
    pg = services["postgres"]
    assert "wal_level=logical" in pg["command"]
    assert "postgresql-15-wal2json" in pg["build"]["dockerfile_inline"]
    assert pg["ports"] == ["${PUBLISH_ADDRESS:-127.0.0.1}:5432:5432"]  # loopback unless opted in
    assert services["redis"]["image"].startswith("redis/redis-stack-server")
    assert "--appendonly yes" in services["redis"]["environment"]["REDIS_ARGS"]
    connector = services["connector"]
    env = connector["environment"]
    assert env["CONNECTOR_POSTGRES__DSN"].endswith("@postgres:5432/app")
    assert env["CONNECTOR_REDIS__URL"] == "redis://redis:6379/0"
    assert connector["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("postgres", "redis"):
        assert "healthcheck" in services[name]
    assert set(compose["volumes"]) == {"pgdata", "redisdata"}


def test_cli_help_lists_the_commands() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "connector.cli", "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0
    for command in ("migrate", "dev"):
        assert command in done.stdout


def test_the_public_surface_loads_no_postgres_driver() -> None:
    """An application that only searches imports `connector` without psycopg."""
    code = (
        "import sys; from connector import Settings, answer, load_settings, search, searcher\n"
        "unwanted = ('psycopg', 'connector.source', 'connector.flow')\n"
        "print(sorted(m for m in unwanted if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "./dev.sh test" in readme.split("\n## ")[0]
    assert "./dev.sh test" in (ROOT / ".ci" / "run").read_text()


def test_the_built_wheel_runs_its_migrations_and_every_help(tmp_path: Path, pg_dsn: str) -> None:
    """`pip install .` (not editable) ships the SQL: the wheel, installed into a fresh virtual
    environment, applies the migrations from inside the package, far from the source tree."""
    import shutil
    import sysconfig

    source = tmp_path / "source"  # a copy, so no build/ left from an earlier build is reused
    shutil.copytree(
        ROOT, source, symlinks=True,
        ignore=shutil.ignore_patterns(".git", ".venv", ".dev", "build", "*.egg-info", "bench"),
    )  # fmt: skip
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheels), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    wheel = next(wheels.glob("*.whl"))
    _check_contents(wheel)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q",
         str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    # The dependencies come from this environment (no network); the package only from the wheel.
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(venv / "bin" / "connector"), *args],
            capture_output=True, text=True, cwd=elsewhere, timeout=120,
        )  # fmt: skip

    where = subprocess.run(
        [str(python), "-c", "import connector; print(connector.__file__)"],
        capture_output=True, text=True, cwd=elsewhere, check=True,
    ).stdout  # fmt: skip
    assert where.startswith(str(venv)), where
    done = run("migrate", "--dsn", pg_dsn)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "applied", "001_documents.sql", "applied", "002_connector_role.sql",
    ]  # fmt: skip
    from connector.cli import build_parser

    parser = build_parser()
    commands = [[]] + [[name] for name in _subcommands(parser)]
    commands += [[group, name] for group in ("dev", "slot") for name in _subcommands(parser, group)]
    for command in commands:
        done = run(*command, "--help")
        assert done.returncode == 0 and "usage: connector" in done.stdout, (command, done.stderr)


def _check_contents(wheel: Path) -> None:
    """What the image's `pip install .[serve]` gets: the page, the SQL, the serve extra."""
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = next(archive.read(n).decode() for n in names if n.endswith("/METADATA"))
    assert {"connector/serve/page.html", "connector/py.typed"} <= names
    assert any(re.match(r"connector/migrations/\d+_.*\.sql", n) for n in names), names
    serve = [line for line in metadata.splitlines() if 'extra == "serve"' in line]
    assert any("fastapi" in line for line in serve) and any("uvicorn" in line for line in serve)


def _subcommands(parser: Any, group: str | None = None) -> list[str]:
    if group is not None:
        parser = _subcommand_parsers(parser)[group]
    return list(_subcommand_parsers(parser))


def _subcommand_parsers(parser: Any) -> dict[str, Any]:
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}
