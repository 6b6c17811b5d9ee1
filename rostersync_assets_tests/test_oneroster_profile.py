"""District profiles: every field parses, and every unusable value is refused with the field named.

A profile is written by a person once per district; a typo must fail when the district is registered,
not silently do nothing (or map onto a value the validator rejects) during the nightly sync.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from rostersync_assets.oneroster import profile as profile_module
from rostersync_assets.oneroster.profile import CEDS_GRADES, STRICT, DistrictProfile, ProfileError, enum_values

# One usable value per field, different from the default.
GOOD: dict[str, Any] = {
    "header_aliases": {"users.csv": {"userId": "userIds", "dataLastModified": "dateLastModified"}},
    "date_format": "%m/%d/%Y",
    "boolean_aliases": {"Y": "true", "N": "false", "1": "true", "0": "false"},
    "enum_aliases": {"role": {"Lehrer": "teacher"}, "status": {"A": "active"}, "classType": {"HR": "homeroom"}},
    "grade_map": {"K": "KG", "0": "KG", "Grade 9": "09"},
    "legacy_v1_0": True,
    "fallback_encoding": "cp1252",
    "max_rejected_share": 0.1,
}


def test_an_empty_or_missing_profile_is_strict():
    assert DistrictProfile.from_mapping(None) == STRICT
    assert DistrictProfile.from_mapping({}) == STRICT
    assert STRICT.date_format is None and not STRICT.boolean_aliases and not STRICT.header_aliases


@pytest.mark.parametrize("field", sorted(GOOD))
def test_every_field_parses(field):
    assert getattr(DistrictProfile.from_mapping({field: GOOD[field]}), field) == GOOD[field]


def test_every_field_is_checked_and_has_a_test_value():
    # A new field without a check would accept anything; one without a GOOD value would go untested.
    fields = {f.name for f in dataclasses.fields(DistrictProfile)}
    assert set(profile_module._CHECKS) == fields
    assert set(GOOD) == fields


def test_a_full_profile_parses_and_loads_from_yaml(tmp_path: Path):
    import yaml

    path = tmp_path / "profile.yaml"
    path.write_text(yaml.safe_dump(GOOD), encoding="utf-8")
    assert DistrictProfile.load(path) == DistrictProfile(**GOOD)


def test_a_yaml_file_that_is_not_a_mapping_is_refused(tmp_path: Path):
    path = tmp_path / "profile.yaml"
    path.write_text("- date_format\n", encoding="utf-8")
    with pytest.raises(ProfileError, match="mapping of fields"):
        DistrictProfile.load(path)


@pytest.mark.parametrize(
    ("raw", "names"),
    [
        ({"date_fromat": "%d/%m/%Y"}, "date_fromat"),
        # header_aliases
        ({"header_aliases": ["users.csv"]}, "header_aliases"),
        ({"header_aliases": {"users.csv": ["userId"]}}, "header_aliases.users.csv"),
        ({"header_aliases": {"users.csv": {"userId": 3}}}, "header_aliases.users.csv"),
        ({"header_aliases": {"Users.csv": {"userId": "userIds"}}}, "Users.csv"),
        ({"header_aliases": {"users": {"userId": "userIds"}}}, "'users'"),
        ({"header_aliases": {"resources.csv": {"x": "sourcedId"}}}, "resources.csv"),
        ({"header_aliases": {"users.csv": {"userId": "userID"}}}, "userID"),
        ({"header_aliases": {"enrollments.csv": {"uid": "userIds"}}}, "userIds"),
        # date_format
        ({"date_format": "%m/%d"}, "date_format"),
        ({"date_format": "%d.%m.%Y %Q"}, "date_format"),
        ({"date_format": "%d/%d/%m/%Y"}, "date_format"),
        ({"date_format": 20240101}, "date_format"),
        # boolean_aliases
        ({"boolean_aliases": {"Y": "yes"}}, "boolean_aliases.*yes"),
        ({"boolean_aliases": {"Y": True}}, "boolean_aliases"),
        ({"boolean_aliases": ["Y"]}, "boolean_aliases"),
        # enum_aliases
        ({"enum_aliases": {"role": {"Lehrer": "Teacher"}}}, "enum_aliases.role.*Teacher"),
        ({"enum_aliases": {"givenName": {"Bob": "Robert"}}}, "givenName.*not an enumeration"),
        ({"enum_aliases": {"role": "teacher"}}, "enum_aliases.role"),
        # grade_map
        ({"grade_map": {"9": "9"}}, "grade_map.*9"),
        ({"grade_map": {"K": "Kindergarten"}}, "grade_map.*Kindergarten"),
        ({"grade_map": {"K": None}}, "grade_map"),
        # legacy_v1_0
        ({"legacy_v1_0": "yes"}, "legacy_v1_0"),
        # fallback_encoding
        ({"fallback_encoding": "latin-9000"}, "fallback_encoding"),
        ({"fallback_encoding": 1252}, "fallback_encoding"),
        # max_rejected_share
        ({"max_rejected_share": 1.5}, "max_rejected_share"),
        ({"max_rejected_share": "2%"}, "max_rejected_share"),
        ({"max_rejected_share": True}, "max_rejected_share"),
    ],
)
def test_an_unusable_field_is_refused_with_its_name(raw, names):
    with pytest.raises(ProfileError, match=names):
        DistrictProfile.from_mapping(raw)


@pytest.mark.parametrize("date_format", ["%d/%m/%Y", "%m/%d/%y", "%d.%m.%Y", "%Y/%m/%d", "%m-%d-%Y"])
def test_day_month_year_formats_are_accepted(date_format):
    assert DistrictProfile.from_mapping({"date_format": date_format}).date_format == date_format


def test_null_optional_fields_keep_their_default():
    assert DistrictProfile.from_mapping({"date_format": None, "fallback_encoding": None}) == STRICT


def test_enum_values_cover_status_and_every_file():
    assert enum_values("status") == {"active", "tobedeleted"}
    assert {"aide", "administrator", "teacher"} <= enum_values("role")  # users.role and enrollments.role
    assert enum_values("type") >= {"school", "schoolYear"}  # orgs.type and academicSessions.type
    assert enum_values("givenName") == frozenset()


def test_ceds_grades_have_two_digits():
    assert {"KG", "PK", "01", "09", "12", "13", "Other"} <= CEDS_GRADES
    assert "9" not in CEDS_GRADES and "K" not in CEDS_GRADES
