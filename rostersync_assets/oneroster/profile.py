"""A district's profile: how leniently to read its feed, decided once per district by a person.

Defaults are strict where a guess could corrupt data (an ambiguous `03/04/2024` is never guessed, `1`/`Y`
are not booleans) and lenient where the fix is certain (a BOM, `TRUE` for `true`, CRLF). A profile
lives in the district registry (`profile:` under the district) or in a YAML file given to
`rostersync validate --profile FILE`; every field is optional.

Every field is checked when the profile is loaded, against spec.py where it names a file, a column or
a value: a typo in a profile must fail loudly when the district is registered, not silently do
nothing (or map onto a value the validator rejects) on the night of the sync.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import yaml

from rostersync_assets.oneroster import spec

# Vocabularies REFERENCE §5 defines that spec.py does not carry (yet): normalize.py maps onto them and
# profile targets are checked against them. Candidates to move into spec.py.
STATUSES: frozenset[str] = frozenset({"active", "tobedeleted"})
# CEDS "Entry Grade Level" codes (REFERENCE §5 grades, OneRoster 1.1 US): two digits, leading zero.
CEDS_GRADES: frozenset[str] = frozenset(
    {"IT", "PR", "PK", "TK", "KG", *(f"{grade:02d}" for grade in range(1, 14)), "PS", "UG", "Other"}
)
BOOLEANS: frozenset[str] = frozenset({"true", "false"})

# A day that tells day, month and year apart in a round trip (13 > 12, 2031 is not 13 or 31).
_PROBE_DATE = date(2031, 12, 13)


class ProfileError(ValueError):
    """A profile field is unusable; the message names the field."""


def enum_values(column: str) -> frozenset[str]:
    """Every value `column` may hold in any synced file (status included); empty for non-enum columns.

    `role` is the union of users.role and enrollments.role: the validator still judges each file's value.
    """
    if column == "status":
        return STATUSES
    return frozenset().union(*(file_spec.enums.get(column, frozenset()) for file_spec in spec.SYNCED_FILES))


@dataclass(frozen=True)
class DistrictProfile:
    """Per-district reading rules.

    header_aliases: file name -> {delivered header -> spec column} (e.g. `{"users.csv": {"userId": "userIds"}}`).
    date_format: strptime format for non-ISO dates (`%m/%d/%Y`); None = ISO `YYYY-MM-DD` only.
    boolean_aliases: extra tokens accepted for true/false (`{"Y": "true", "N": "false", "1": "true"}`);
        matched exactly (list `y` too if the district sends it).
    enum_aliases: column -> {delivered value -> spec value} (`{"role": {"Lehrer": "teacher"}}`); `status`
        is an enumeration here too.
    grade_map: delivered grade -> CEDS code (`{"K": "KG", "9": "09"}`); applied to each item of a grades
        list before the built-in grade fixes.
    legacy_v1_0: read packages without manifest as OneRoster 1.0 (all files bulk).
    fallback_encoding: decode a file with this codec when it is not UTF-8 (reported as `fixed`).
    max_rejected_share: share of an entity's rows that may be quarantined before the delivery is held.
    """

    header_aliases: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    date_format: str | None = None
    boolean_aliases: Mapping[str, str] = field(default_factory=dict)
    enum_aliases: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    grade_map: Mapping[str, str] = field(default_factory=dict)
    legacy_v1_0: bool = False
    fallback_encoding: str | None = None
    max_rejected_share: float = 0.02

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None) -> DistrictProfile:
        """Build from the YAML mapping; unknown keys and unusable values are refused with the field named."""
        raw = dict(raw or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(str(key) for key in set(raw) - known)
        if unknown:
            raise ProfileError(f"unknown profile field(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        for name, check in _CHECKS.items():
            if name in raw:
                check(raw[name])
        return cls(**raw)

    @classmethod
    def load(cls, path: Path) -> DistrictProfile:
        """Read a profile YAML file (`rostersync validate --profile FILE`)."""
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        if raw is not None and not isinstance(raw, Mapping):
            raise ProfileError(f"{path}: a profile is a mapping of fields")
        return cls.from_mapping(raw)


def _string_map(name: str, value: Any) -> Mapping[str, str]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ProfileError(f"{name} must map strings to strings")
    return value


def _nested_string_map(name: str, value: Any) -> Mapping[str, Mapping[str, str]]:
    if not isinstance(value, Mapping) or not all(isinstance(key, str) for key in value):
        raise ProfileError(f"{name} must map a name to a mapping of strings")
    for key, inner in value.items():
        _string_map(f"{name}.{key}", inner)
    return value


def _refuse_targets(name: str, mapping: Mapping[str, str], allowed: frozenset[str]) -> None:
    """Refuse mappings onto values the validator would reject anyway: they are typos, not fixes."""
    bad = sorted({target for target in mapping.values() if target not in allowed})
    if bad:
        raise ProfileError(f"{name} must map to one of {', '.join(sorted(allowed))}, not {', '.join(bad)}")


def _check_header_aliases(value: Any) -> None:
    """Keys are synced file names (`users.csv`), targets are that file's spec columns."""
    for file_name, aliases in _nested_string_map("header_aliases", value).items():
        entity = spec.entity_of_file(file_name)
        if entity is None or not file_name.endswith(".csv"):
            synced = ", ".join(file_spec.file_name for file_spec in spec.SYNCED_FILES)
            raise ProfileError(f"header_aliases: {file_name!r} is not a synced file name ({synced})")
        _refuse_targets(f"header_aliases.{file_name}", aliases, frozenset(spec.SPECS[entity].columns))


def _check_enum_aliases(value: Any) -> None:
    """Keys are enumeration columns (status, type, role, ...), targets are values of that enumeration."""
    for column, aliases in _nested_string_map("enum_aliases", value).items():
        allowed = enum_values(column)
        if not allowed:
            raise ProfileError(f"enum_aliases: {column!r} is not an enumeration column")
        _refuse_targets(f"enum_aliases.{column}", aliases, allowed)


def _check_boolean_aliases(value: Any) -> None:
    _refuse_targets("boolean_aliases", _string_map("boolean_aliases", value), BOOLEANS)


def _check_grade_map(value: Any) -> None:
    _refuse_targets("grade_map", _string_map("grade_map", value), CEDS_GRADES)


def _check_date_format(value: Any) -> None:
    """A strptime format naming day, month and year, that reads back what it writes.

    The round trip refuses formats strptime cannot parse (`%d/%m/%Y %Q`) and ones that lose a part.
    """
    if value is None:
        return
    if not isinstance(value, str) or "%d" not in value or "%m" not in value or not ("%Y" in value or "%y" in value):
        raise ProfileError(f"date_format must be a strptime format with %d, %m and %Y (or %y), not {value!r}")
    try:
        round_trip = datetime.strptime(_PROBE_DATE.strftime(value), value).date()
    except (ValueError, re.error) as error:  # re.error: a directive given twice (`%d/%d/%m/%Y`)
        raise ProfileError(f"date_format {value!r} cannot be read back: {error}") from None
    if round_trip != _PROBE_DATE:
        raise ProfileError(f"date_format {value!r} does not read back the date it writes")


def _check_legacy_v1_0(value: Any) -> None:
    if not isinstance(value, bool):
        raise ProfileError(f"legacy_v1_0 must be true or false, not {value!r}")


def _check_fallback_encoding(value: Any) -> None:
    if value is None:
        return
    try:
        codecs.lookup(value)
    except (LookupError, TypeError):
        raise ProfileError(f"fallback_encoding {value!r} is not a codec Python knows (e.g. cp1252)") from None


def _check_max_rejected_share(value: Any) -> None:
    # bool is an int: `max_rejected_share: true` is a typo, not 100%.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ProfileError(f"max_rejected_share must be a number between 0 and 1, not {value!r}")


_CHECKS: dict[str, Callable[[Any], None]] = {
    "header_aliases": _check_header_aliases,
    "date_format": _check_date_format,
    "boolean_aliases": _check_boolean_aliases,
    "enum_aliases": _check_enum_aliases,
    "grade_map": _check_grade_map,
    "legacy_v1_0": _check_legacy_v1_0,
    "fallback_encoding": _check_fallback_encoding,
    "max_rejected_share": _check_max_rejected_share,
}

STRICT = DistrictProfile()
