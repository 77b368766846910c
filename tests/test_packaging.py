"""What users get from the repository itself: compose file, example config, entry points."""

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_compose_file_names_the_right_services() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "connector"}
    pg = services["postgres"]
    assert "wal_level=logical" in pg["command"]
    assert "postgresql-15-wal2json" in pg["build"]["dockerfile_inline"]
    assert pg["ports"] == ["5432:5432"]
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


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "./dev.sh test" in readme.split("\n## ")[0]
    assert "./dev.sh test" in (ROOT / ".ci" / "run").read_text()
