"""What the commands share: the log setup and the one line for an address that cannot be bound."""

from __future__ import annotations

import argparse
import errno

from connector.config import Settings
from connector.errors import ConfigError


def set_up_logging(args: argparse.Namespace, settings: Settings | None = None) -> None:
    """The log level and format of the command line, else of the settings."""
    from connector.logs import configure_logging

    level = args.log_level or (settings.observability.log_level if settings else "INFO")
    fmt = args.log_format or (settings.observability.log_format if settings else "text")
    configure_logging(level, fmt)


def cannot_listen(
    exc: OSError, host: str, port: int, port_setting: str, host_setting: str, off: str = ""
) -> ConfigError:
    """One line for an address that cannot be bound, naming the setting that fixes it."""
    where = f"cannot listen on {host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return ConfigError(
            f"{where}: the port is in use (by another connector?): set {port_setting} to a "
            f"free port{off}"
        )
    if exc.errno == errno.EACCES:
        return ConfigError(f"{where}: permission denied (below 1024?): set {port_setting}")
    reason = exc.strerror or str(exc)
    return ConfigError(f"{where} ({reason}): set {host_setting} to an address of this machine")
