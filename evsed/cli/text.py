"""How the CLI writes values for people: times in the charger's zone, currents as offered,
and what a service reports as words, never Python's repr of it."""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (2 ms of `evsed status`)
if TYPE_CHECKING:
    import datetime as dt
    from typing import Any


def zone(name: str | None) -> dt.tzinfo:
    """The charger's time zone by name; this machine's own when the name is unknown or missing."""
    import datetime as dt  # here and below: only when there is a time to show (1 ms of `evsed status`)
    if name:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    return dt.datetime.now().astimezone().tzinfo or dt.timezone.utc


def local_time(iso: str | None, tz: dt.tzinfo | str | None, empty: str = "") -> str:
    """An ISO 8601 instant (any offset) as the charger's wall-clock time, to the second; the zone
    may be given by name (looked up only when there is a time to show)."""
    if not iso:
        return empty
    import datetime as dt
    try:
        return dt.datetime.fromisoformat(iso).astimezone(tz if isinstance(tz, dt.tzinfo) else zone(tz)).strftime(
            "%Y-%m-%d %H:%M:%S")
    except ValueError:
        return iso


def local_iso(iso: str | None, tz: dt.tzinfo) -> str | None:
    """An ISO 8601 instant with the charger's offset (for CSV and JSON), to the second."""
    if not iso:
        return iso
    import datetime as dt
    return dt.datetime.fromisoformat(iso).astimezone(tz).isoformat(timespec="seconds")


def amps(current_a: float) -> str:
    """A current to 0.1 A, the pilot's resolution (53.3 % duty is 31.98 A: shown as 32 A)."""
    return f"{round(current_a, 1):g} A"


def plain(value: Any) -> str:
    """A reported value in words: yes/no, '-' for unset, numbers without noise, a table as
    `key=value` pairs leaving out the unset ones."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{round(value, 3):g}"
    if isinstance(value, dict):
        parts = [f"{k}={plain(v)}" for k, v in value.items() if v is not None and v != {} and v != []]
        return " ".join(parts) if parts else "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(plain(v) for v in value) if value else "-"
    return str(value)


def fields(report: dict[str, Any], leave_out: tuple[str, ...] = ("at",)) -> str:
    """A service's report on one line: `connected yes, queued 0, limits_a 1=16`; unset and empty
    fields left out."""
    shown = ((k, plain(v)) for k, v in report.items() if k not in leave_out)
    return ", ".join(f"{k} {v}" for k, v in shown if v not in ("-", ""))
