"""Tests that need no server: no Postgres, no Redis, no daemon (the service fixtures of
tests/conftest.py are not used here). Service-backed tests: tests/ itself and its other folders."""
