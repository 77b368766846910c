"""The shared test harness: throwaway PostgreSQL (with wal2json) and Redis Stack servers,
settings written as TOML, and one daemon launcher, used by `tests/`, `tests/reliability/` and
`bench/` (and `connector dev up`, which starts the same servers for a try-out).
"""
