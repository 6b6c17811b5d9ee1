"""A district's own schedule: when to look for its delivery, as a cron line in its time zone.

Districts publish at different local hours, and "05:00" means 05:00 in Chicago for one and in
Honolulu for another, shifting with daylight saving time; so the registry keeps the cron line and the
IANA zone together and Dagster evaluates the cron line in that zone. The registry checks both when it
loads, so a typo is reported with the district's name instead of breaking the code location later.
The cron grammar accepted is the plain five-field one (numbers, `*`, ranges, steps, lists, month and
weekday names), a subset of what Dagster accepts.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_FIELDS = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {m: i for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split(), 1)}),
    ("day of week", 0, 7, {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}),
)
_ELEMENT = re.compile(r"^(?P<range>\*|(?P<first>[0-9a-z]+)(?:-(?P<last>[0-9a-z]+))?)(?:/(?P<step>[0-9]+))?$")
_FEBRUARY = 2


@dataclass(frozen=True, order=True)
class DeliverySchedule:
    """`cron` (five fields, single-spaced) evaluated in the IANA time zone `timezone`."""

    cron: str
    timezone: str

    @classmethod
    def from_mapping(cls, raw: Any) -> DeliverySchedule:
        """Parse the registry's `schedule: {cron: ..., timezone: ...}`; ValueError names the problem."""
        if not isinstance(raw, Mapping):
            raise ValueError("must be a mapping with 'cron' and 'timezone'")
        unknown = sorted(set(raw) - {"cron", "timezone"})
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(map(str, unknown))} (expected cron and timezone)")
        cron, timezone = raw.get("cron"), raw.get("timezone")
        if not isinstance(cron, str) or not cron.strip():
            raise ValueError("cron is missing (e.g. cron: \"0 5 * * *\")")
        if not isinstance(timezone, str) or not timezone.strip():
            raise ValueError("timezone is missing (an IANA name such as America/Chicago)")
        return cls(cron=validate_cron(cron), timezone=validate_timezone(timezone))

    def to_dict(self) -> dict[str, str]:
        return {"cron": self.cron, "timezone": self.timezone}


def validate_cron(cron: str) -> str:
    """Return the cron line single-spaced if it is a valid five-field line that can ever fire."""
    fields = cron.split()
    if len(fields) != 5:
        raise ValueError(
            f"cron {cron!r} must have 5 fields (minute hour day-of-month month day-of-week), not {len(fields)}"
        )
    values = [
        _field_values(text, name, low, high, names, cron) for text, (name, low, high, names) in zip(fields, _FIELDS)
    ]
    days, months = values[2], values[3]
    if months == {_FEBRUARY} and min(days) > 29:
        raise ValueError(f"cron {cron!r} never fires: February has no day {min(days)}")
    return " ".join(fields)


def validate_timezone(name: str) -> str:
    """Return `name` if it is an IANA time zone known here (tzdata), e.g. America/Chicago or UTC."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"timezone {name!r} is not an IANA time zone name (e.g. America/Chicago)") from None
    return name


def _field_values(text: str, name: str, low: int, high: int, names: dict[str, int], cron: str) -> set[int]:
    """Every value a field selects; ValueError naming the field and the element that is wrong."""
    values: set[int] = set()
    for element in text.lower().split(","):
        match = _ELEMENT.fullmatch(element)
        if match is None:
            raise ValueError(f"cron {cron!r}: {name} element {element!r} is not a number, range, step or '*'")
        first, last = low, high
        if match["range"] != "*":
            first = _value(match["first"], name, low, high, names, cron)
            if match["last"] is not None:
                last = _value(match["last"], name, low, high, names, cron)
            elif match["step"] is None:
                last = first  # a single value; `5/15` means 5-59/15, as in cron
            if last < first:
                raise ValueError(f"cron {cron!r}: {name} range {element!r} runs backwards")
        step = int(match["step"] or 1)
        if not 1 <= step <= high:
            raise ValueError(f"cron {cron!r}: {name} step in {element!r} must be between 1 and {high}")
        values.update(range(first, last + 1, step))
    return values


def _value(token: str, name: str, low: int, high: int, names: dict[str, int], cron: str) -> int:
    if token in names:
        return names[token]
    if not token.isdigit() or not low <= int(token) <= high:
        raise ValueError(f"cron {cron!r}: {name} value {token!r} is outside {low}-{high}")
    return int(token)
