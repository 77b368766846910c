"""What `connector check` finds, and how it says it (pure): each finding is one setting, what
was found, what that means for the connector, and the fix; the report is their list, printed
for a person or as JSON, with the exit status (1 when anything is an ERROR)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Level = Literal["OK", "WARNING", "ERROR", "SKIPPED"]
# What `connector run` does with a finding at start: "refuse" (an ERROR stops the start, a
# WARNING is logged), "warn" (an ERROR is only logged: the daemon ran with it before, and may
# still), "daemon" (the daemon says it itself, every attempt: the start checks stay quiet).
AtStart = Literal["refuse", "warn", "daemon"]
AREAS = ("postgres", "tables", "redis", "index", "embedding", "chat")


@dataclass(frozen=True, slots=True)
class Finding:
    """One setting checked: `value` is what was found, `meaning` what it means for the
    connector, `fix` what to do about it (empty when nothing needs doing)."""

    level: Level
    area: str
    setting: str
    value: str
    meaning: str
    fix: str = ""
    at_start: AtStart = "refuse"

    def line(self) -> str:
        """One line (and the fix on the next) for a person."""
        text = f"{self.level:<8} {self.setting} = {self.value}: {self.meaning}"
        return text + (f"\n{'':<9}fix: {self.fix}" if self.fix else "")

    def as_dict(self) -> dict[str, str]:
        found = asdict(self)
        found.pop("at_start")
        return found


def ok(area: str, setting: str, value: str, meaning: str) -> Finding:
    return Finding("OK", area, setting, value, meaning)


def warning(area: str, setting: str, value: str, meaning: str, fix: str) -> Finding:
    return Finding("WARNING", area, setting, value, meaning, fix)


def error(
    area: str, setting: str, value: str, meaning: str, fix: str, at_start: AtStart = "refuse"
) -> Finding:
    return Finding("ERROR", area, setting, value, meaning, fix, at_start)


def skipped(area: str, setting: str, why: str) -> Finding:
    return Finding("SKIPPED", area, setting, "not checked", why)


@dataclass(slots=True)
class Report:
    """Every finding, in the order they were made."""

    findings: list[Finding] = field(default_factory=list)

    def add(self, found: Finding | Iterable[Finding]) -> None:
        if isinstance(found, Finding):
            self.findings.append(found)
        else:
            self.findings.extend(found)

    def count(self, level: Level) -> int:
        return sum(1 for f in self.findings if f.level == level)

    @property
    def exit_code(self) -> int:
        """0 when nothing is an ERROR, else 1 (2, a bad configuration, never gets here)."""
        return 1 if self.count("ERROR") else 0

    def render(self) -> str:
        """The findings by area, then a summary line."""
        lines: list[str] = []
        for area in [*AREAS, *sorted({f.area for f in self.findings} - set(AREAS))]:
            found = [f for f in self.findings if f.area == area]
            if found:
                lines.append(area)
                lines += ["  " + f.line().replace("\n", "\n  ") for f in found]
        lines.append(self.summary())
        return "\n".join(lines)

    def summary(self) -> str:
        errors, warnings = self.count("ERROR"), self.count("WARNING")
        verdict = (
            "`connector run` would refuse to start, or fail later"
            if errors
            else "ready for `connector run`"
        )
        return f"{errors} error(s), {warnings} warning(s): {verdict}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": not self.count("ERROR"),
            "errors": self.count("ERROR"),
            "warnings": self.count("WARNING"),
            "findings": [f.as_dict() for f in self.findings],
        }


# Where a refusal's message turns from what is wrong to what to do about it: the marker, and
# how much of it is not part of the fix (": set ..." keeps its verb, ". Run: ALTER ..." not).
_FIX_MARKERS = ((". Run: ", 7), (". Fix: ", 7), (": fix ", 2), (": check ", 2), (": add ", 2),
                (": set ", 2), (": give ", 2), (": run ", 2), (": use ", 2), (": upgrade ", 2),
                (": choose ", 2), (": raise ", 2), (". Configure ", 2), (": move ", 2),
                (": make ", 2), (": rebuild ", 2), (": drop ", 2))  # fmt: skip


def split_fix(message: str) -> tuple[str, str]:
    """A refusal's message (a ConfigError: what, then the fix) as (meaning, fix)."""
    found = [(message.find(m), skip) for m, skip in _FIX_MARKERS if m in message]
    if not found:
        return message, "see the message"
    at, skip = min(found)
    return message[:at], message[at + skip :].strip()


def refusal(area: str, setting: str, value: str, message: str, at_start: AtStart) -> Finding:
    """An ERROR from the message of a check the connector makes anyway (a ConfigError)."""
    meaning, fix = split_fix(message)
    return Finding("ERROR", area, setting, value, meaning, fix, at_start)
