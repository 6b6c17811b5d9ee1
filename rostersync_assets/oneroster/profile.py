"""A district's profile: how leniently to read its feed, decided once per district by a person.

Defaults are strict where a guess could corrupt data (an ambiguous `03/04/2024` is never guessed, `1`/`Y`
are not booleans) and lenient where the fix is certain (a BOM, `TRUE` for `true`, CRLF). A profile
lives in the district registry (`profile:` under the district) or in a YAML file given to
`rostersync validate --profile FILE`; every field is optional.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ProfileError(ValueError):
    """A profile field is unusable; the message names the field."""


@dataclass(frozen=True)
class DistrictProfile:
    """Per-district reading rules.

    header_aliases: file name -> {delivered header -> spec column} (e.g. `{"users.csv": {"userId": "userIds"}}`).
    date_format: strptime format for ambiguous dates (`%m/%d/%Y`); None = ISO `YYYY-MM-DD` only.
    boolean_aliases: extra tokens accepted for true/false (`{"Y": "true", "N": "false", "1": "true"}`).
    enum_aliases: column -> {delivered value -> spec value} (`{"role": {"Lehrer": "teacher"}}`).
    grade_map: delivered grade -> CEDS code (`{"K": "KG", "9": "09"}`).
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
        """Build from the YAML mapping; unknown keys are refused (a typo must not silently do nothing)."""
        raw = dict(raw or {})
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ProfileError(f"unknown profile field(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        share = raw.get("max_rejected_share", 0.02)
        if not isinstance(share, (int, float)) or not 0 <= share <= 1:
            raise ProfileError(f"max_rejected_share must be a number between 0 and 1, not {share!r}")
        for name in ("boolean_aliases", "grade_map"):
            value = raw.get(name, {})
            if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
                raise ProfileError(f"{name} must map strings to strings")
        bad_booleans = sorted(v for v in raw.get("boolean_aliases", {}).values() if v not in ("true", "false"))
        if bad_booleans:
            raise ProfileError(f"boolean_aliases must map to 'true' or 'false', not {', '.join(bad_booleans)}")
        for name in ("header_aliases", "enum_aliases"):
            value = raw.get(name, {})
            if not isinstance(value, Mapping) or not all(isinstance(v, Mapping) for v in value.values()):
                raise ProfileError(f"{name} must map a name to a mapping of strings")
        return cls(**raw)

    @classmethod
    def load(cls, path: Path) -> DistrictProfile:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        if raw is not None and not isinstance(raw, Mapping):
            raise ProfileError(f"{path}: a profile is a mapping of fields")
        return cls.from_mapping(raw)


STRICT = DistrictProfile()
