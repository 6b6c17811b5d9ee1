"""Convert Clever's legacy SFTP CSV format into the same OneRoster 1.1 tables the reader produces.

A district on Clever must onboard exactly like a OneRoster district, so this module is a second
reader: pure (file name -> raw bytes in, `RosterPackage` out), and everything downstream (validation,
diff, LMS push) neither knows nor cares which format a district delivered. REFERENCE §11.1 describes
the format; the mapping decisions (each one a place where Clever has no OneRoster equivalent) are:

* district: Clever files carry no district id (one SFTP account is one district), so one synthetic
  district org `clever-district` is the parent of every school.
* schools.csv -> orgs of type school (`identifier` = `Nces_id`).
* sessions: one term per distinct (`Term_name`, `Term_start`, `Term_end`) of sections.csv, all under
  one synthetic school year spanning them (`schoolYear` = year of the last term end). Sections
  without a term are placed in the school year itself (reported).
* courses: Clever has no course file; one course per distinct (`School_id`, `Course_number`,
  `Course_name`) of sections.csv. The name is part of the key because real exports reuse a number for
  several courses (the Clever sandbox numbers homerooms and maths classes alike).
* sections.csv -> classes (classType `scheduled`); students.csv / teachers.csv -> users (roles
  student / teacher); students.csv -> demographics when it has Dob, Gender, Race or Hispanic_Latino.
* enrollments.csv -> student enrollments; `Teacher_id`, `Teacher_2_id`.. -> one teacher enrollment
  per section and teacher (primary = first listed).
* Synthetic ids (district, sessions, courses, enrollments) are derived from the defining values, so
  they are stable across deliveries; delivered ids are kept exactly as delivered.
* Passwords are never copied (REFERENCE M29); no diagnostic carries a value from students.csv or
  teachers.csv other than a grade, and personal values are masked as their OneRoster column would be.
* Dates (`M/D/YY` in Clever exports) are converted only with the profile's `date_format`, which a
  person confirms when onboarding the district; otherwise `value.date_ambiguous`, never a guess.

`_line` is the line of the source row in its Clever file (header = 1) and `_file` names that file: users
mix students.csv and teachers.csv rows, enrollments enrollments.csv and sections.csv rows, so a line
number alone does not name a row. Validation names (`_file`, `_line`) in its findings and quarantines
exactly that source row. A record derived from several rows carries the first row that defines it;
the teacher enrollments of one sections.csv row share that row, and are quarantined together.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rostersync_assets.oneroster import spec
from rostersync_assets.oneroster.diagnostics import Diagnostic, mask
from rostersync_assets.oneroster.profile import STRICT, DistrictProfile
from rostersync_assets.oneroster.reader import RosterPackage, _parse, uninterpretable
from rostersync_assets.oneroster.spec import FILE_COLUMN, LINE_COLUMN

VERSION = "clever"
DISTRICT_ID = "clever-district"
DISTRICT_NAME = "District (Clever)"
TEACHER_COLUMNS: tuple[str, ...] = ("Teacher_id", "Teacher_2_id", "Teacher_3_id", "Teacher_4_id")


@dataclass(frozen=True)
class CleverFile:
    """One Clever file: the columns a conversion cannot do without, and those it uses when present."""

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        return self.required + self.optional


SCHOOLS = CleverFile("schools.csv", ("School_id", "School_name"), ("Nces_id",))
STUDENTS = CleverFile(
    "students.csv",
    ("School_id", "Student_id", "Last_name", "First_name"),
    ("Student_number", "State_id", "Middle_name", "Gender", "Dob", "Grade", "Race", "Hispanic_Latino",
     "Student_email", "Username"),
)
TEACHERS = CleverFile(
    "teachers.csv",
    ("School_id", "Teacher_id", "Last_name", "First_name"),
    ("Teacher_number", "State_teacher_id", "Middle_name", "Teacher_email", "Username"),
)
SECTIONS = CleverFile(
    "sections.csv",
    ("School_id", "Section_id", "Teacher_id", "Course_name"),
    TEACHER_COLUMNS[1:]
    + ("Name", "Grade", "Course_number", "Section_number", "Subject", "Period", "Term_name", "Term_start",
       "Term_end"),
)
ENROLLMENTS = CleverFile("enrollments.csv", ("School_id", "Student_id", "Section_id"))
CLEVER_FILES: tuple[CleverFile, ...] = (SCHOOLS, STUDENTS, TEACHERS, SECTIONS, ENROLLMENTS)
# Files only Clever delivers: their presence (without a OneRoster manifest) identifies the format.
_CLEVER_ONLY_NAMES = frozenset({"schools.csv", "students.csv", "teachers.csv", "sections.csv"})
_DEMOGRAPHIC_COLUMNS = ("Dob", "Gender", "Race", "Hispanic_Latino")

# CEDS entry grade levels (REFERENCE §5) and Clever's own grade words for them.
CEDS_GRADES: frozenset[str] = frozenset(
    {"IT", "PR", "PK", "TK", "KG", *(f"{grade:02d}" for grade in range(1, 14)), "PS", "UG", "Other"}
)
_GRADE_WORDS = {
    "k": "KG", "kindergarten": "KG", "infanttoddler": "IT", "preschool": "PR", "prekindergarten": "PK",
    "transitionalkindergarten": "TK", "postgraduate": "PS", "ungraded": "UG", "other": "Other",
}
# Clever's race codes -> the OneRoster race flag they set.
_RACE_FLAGS = {
    "I": "americanIndianOrAlaskaNative", "A": "asian", "B": "blackOrAfricanAmerican",
    "P": "nativeHawaiianOrOtherPacificIslander", "W": "white", "M": "demographicRaceTwoOrMoreRaces",
}
_YES_NO = {"y": "true", "n": "false"}
_SEX = {"m": "male", "male": "male", "f": "female", "female": "female"}
_SLASH_DATE = r"\d{1,2}/\d{1,2}/(?:\d{4}|\d{2})"
_ISO_DATE = r"\d{4}-\d{2}-\d{2}"

_Tables = dict[str, pd.DataFrame]


def is_clever_package(names: Iterable[str]) -> bool:
    """True for a delivery in Clever's format: a Clever-only file name (any case) and no OneRoster manifest."""
    lowered = {name.lower() for name in names}
    return spec.MANIFEST_FILE.lower() not in lowered and bool(lowered & _CLEVER_ONLY_NAMES)


def is_complete_clever_delivery(names: Iterable[str]) -> bool:
    """True when every file Clever's format requires is there (any case): Clever sends no manifest,
    so the full set is what tells a watcher that an upload is complete."""
    lowered = {name.lower() for name in names}
    return all(clever_file.name in lowered for clever_file in CLEVER_FILES)


def read_clever_package(files: Mapping[str, bytes], profile: DistrictProfile = STRICT) -> RosterPackage:
    """Convert a Clever delivery (file name -> raw bytes) to OneRoster tables; never raises on bad data.

    A Clever upload is a full snapshot, so it converts all or nothing: if a file is missing or
    unreadable (fatal reported) no table is produced and every mode is `absent`.
    """
    diagnostics: list[Diagnostic] = []
    located = _locate(files, diagnostics)
    read = {
        clever.name: _read_clever_file(clever, files[located[clever.name]], profile, diagnostics)
        for clever in CLEVER_FILES
        if clever.name in located
    }
    converted = f"converted Clever legacy SFTP files {', '.join(sorted(located.values()))} to OneRoster 1.1 tables"
    first = Diagnostic.create("warning", "clever.converted", converted)
    if len(read) < len(CLEVER_FILES) or any(table is None for table in read.values()):
        return uninterpretable(VERSION, [first, *diagnostics])
    sources = {name: table for name, (table, _) in read.items()}
    with_demographics = any(column in read[STUDENTS.name][1] for column in _DEMOGRAPHIC_COLUMNS)
    tables = _convert(sources, with_demographics, profile, diagnostics)
    modes = {entity: "bulk" if entity in tables else "absent" for entity in spec.ENTITIES}
    return RosterPackage(VERSION, modes, tables, [first, *diagnostics])


# --- files ----------------------------------------------------------------------------------------


def _locate(files: Mapping[str, bytes], diagnostics: list[Diagnostic]) -> dict[str, str]:
    """Clever file name -> delivered name, matched case-insensitively (REFERENCE M7); the rest is reported."""
    located: dict[str, str] = {}
    known = {clever.name for clever in CLEVER_FILES}
    for name in sorted(files):
        canonical = name.lower()
        if canonical in known and canonical not in located:
            located[canonical] = name
            if name != canonical:
                message = f"read as Clever's {canonical} (Clever file names are lowercase)"
                diagnostics.append(Diagnostic.create("fixed", "fix.file_name_case", message, file=name))
        else:
            message = "not a Clever file this conversion reads (or a second copy of one); ignored"
            diagnostics.append(Diagnostic.create("warning", "package.file_unknown", message, file=name))
    for clever in CLEVER_FILES:
        if clever.name not in located:
            needed = ", ".join(c.name for c in CLEVER_FILES)
            message = f"{clever.name} is missing; a Clever delivery needs all of {needed}"
            diagnostics.append(Diagnostic.create("fatal", "clever.file_missing", message, file=clever.name))
    return located


def _read_clever_file(
    clever: CleverFile, raw: bytes, profile: DistrictProfile, diagnostics: list[Diagnostic]
) -> tuple[pd.DataFrame, list[str]] | None:
    """(the file's known columns by name plus `_line`, its header), or None when the file is unusable
    (fatal reported). Column order is free in Clever and absent optional columns read as blank;
    decoding, line endings and row widths follow the OneRoster reader's rules."""
    parsed = _parse(clever.name, raw, profile, diagnostics)
    if parsed is None:
        return None
    header = parsed.header
    if header and not _header_usable(clever, header, diagnostics):
        return None
    diagnostics.extend(parsed.row_findings)
    if parsed.body.empty:
        # A snapshot without rows would mean "everyone left": never inferred from an empty file.
        message = "the file has no data rows; a Clever upload is a full snapshot, so this would remove everyone"
        diagnostics.append(Diagnostic.create("fatal", "file.empty", message, file=clever.name))
        return None
    cells = parsed.body
    table = pd.DataFrame(
        {column: cells[header.index(column)] if column in header else "" for column in clever.columns},
        index=cells.index,
    ).astype("str")
    table[LINE_COLUMN] = parsed.lines
    return table, header


def _header_usable(clever: CleverFile, header: list[str], diagnostics: list[Diagnostic]) -> bool:
    """Required columns present and no used column named twice; other Clever columns are simply not used."""
    missing = [column for column in clever.required if column not in header]
    duplicated = [column for column in clever.columns if header.count(column) > 1]
    for column in missing:
        message = f"the header lacks the {column} column Clever's {clever.name} must have"
        diagnostics.append(
            Diagnostic.create("fatal", "file.header_missing_column", message, file=clever.name, line=1, column=column)
        )
    for column in duplicated:
        message = f"the header names {column} {header.count(column)} times"
        diagnostics.append(
            Diagnostic.create("fatal", "file.header_duplicate_column", message, file=clever.name, line=1, column=column)
        )
    return not missing and not duplicated


# --- conversion -----------------------------------------------------------------------------------


def _convert(
    sources: _Tables, with_demographics: bool, profile: DistrictProfile, diagnostics: list[Diagnostic]
) -> _Tables:
    """All OneRoster tables of the delivery, parents first; demographics only when students.csv has a
    demographic column (blank-filled ones would claim "no data" for every student)."""
    students, sections = sources[STUDENTS.name], sources[SECTIONS.name]
    dates = _DateConverter(
        [
            _DateColumn(SECTIONS.name, "Term_start", "startDate", sections),
            _DateColumn(SECTIONS.name, "Term_end", "endDate", sections),
            _DateColumn(STUDENTS.name, "Dob", "birthDate", students),
        ],
        profile,
        diagnostics,
    )
    sessions, term_ids, school_year_id = _academic_sessions(sections, dates, diagnostics)
    courses, course_ids = _courses(sections, school_year_id)
    tables = {
        "orgs": _orgs(sources[SCHOOLS.name]),
        "academicSessions": sessions,
        "courses": courses,
        "classes": _classes(sections, course_ids, term_ids, profile, diagnostics),
        "users": _users(students, sources[TEACHERS.name], profile, diagnostics),
        "enrollments": _enrollments(sources[ENROLLMENTS.name], sections),
    }
    if with_demographics:
        tables["demographics"] = _demographics(students, dates.converted("Dob"), diagnostics)
    return {entity: tables[entity] for entity in spec.ENTITIES if entity in tables}


def _table(entity: str, values: Mapping[str, pd.Series | str], lines: pd.Series, source: CleverFile) -> pd.DataFrame:
    """Exactly the entity's spec columns in spec order as `str` ("" when not mapped), plus `_line` and
    `_file` (the Clever file the rows come from)."""
    index = lines.index
    table = pd.DataFrame(
        {column: values.get(column, "") for column in spec.SPECS[entity].columns}, index=index
    ).astype("str")
    table[LINE_COLUMN] = lines.astype(np.int64)
    table[FILE_COLUMN] = pd.Series(source.name, index=index, dtype="str")
    return table.reset_index(drop=True)


def _synthetic_ids(prefix: str, keys: pd.DataFrame) -> pd.Series:
    """Stable opaque ids for records Clever does not identify: a digest of the values that define them."""
    joined = keys.iloc[:, 0].str.cat([keys[column] for column in keys.columns[1:]], sep="\x1f")
    return prefix + joined.map(lambda key: hashlib.sha1(key.encode("utf-8")).hexdigest()[:16])


def _orgs(schools: pd.DataFrame) -> pd.DataFrame:
    """The synthetic district first, then one school org per schools.csv row."""
    first = schools[LINE_COLUMN].iloc[:1]
    district = _table("orgs", {"sourcedId": DISTRICT_ID, "name": DISTRICT_NAME, "type": "district"}, first, SCHOOLS)
    mapped = {
        "sourcedId": schools["School_id"], "name": schools["School_name"], "type": "school",
        "identifier": schools["Nces_id"], "parentSourcedId": DISTRICT_ID,
    }
    return pd.concat([district, _table("orgs", mapped, schools[LINE_COLUMN], SCHOOLS)], ignore_index=True)


def _academic_sessions(
    sections: pd.DataFrame, dates: _DateConverter, diagnostics: list[Diagnostic]
) -> tuple[pd.DataFrame, pd.Series, str]:
    """One term per distinct section term under one school year; returns (sessions, term id per section,
    school-year id)."""
    terms = pd.DataFrame(
        {"name": sections["Term_name"], "start": dates.converted("Term_start"),
         "end": dates.converted("Term_end"), LINE_COLUMN: sections[LINE_COLUMN]}
    )
    has_term = (terms[["name", "start", "end"]] != "").any(axis=1)
    dated = terms[has_term & terms["start"].str.fullmatch(_ISO_DATE) & terms["end"].str.fullmatch(_ISO_DATE)]
    start, end = (dated["start"].min(), dated["end"].max()) if len(dated) else ("", "")
    year = end[:4]
    school_year_id = f"clever-schoolyear-{year}" if year else "clever-schoolyear"
    title = "-".join(dict.fromkeys([start[:4], year])) if year else "School year"
    school_year = _table(
        "academicSessions",
        {"sourcedId": school_year_id, "title": title, "type": "schoolYear", "startDate": start, "endDate": end,
         "schoolYear": year},
        sections[LINE_COLUMN].iloc[:1],
        SECTIONS,
    )
    term_ids = _synthetic_ids("clever-term-", terms[["name", "start", "end"]]).where(has_term, school_year_id)
    unique = terms[has_term].assign(sourcedId=term_ids[has_term]).drop_duplicates("sourcedId")
    mapped = {
        "sourcedId": unique["sourcedId"], "title": unique["name"].where(unique["name"] != "", "Term"),
        "type": "term", "startDate": unique["start"], "endDate": unique["end"],
        "parentSourcedId": school_year_id, "schoolYear": year,
    }
    if not has_term.all():
        first_line = int(sections.loc[~has_term, LINE_COLUMN].iloc[0])
        message = (
            f"{int((~has_term).sum())} section(s) have no Term_name, Term_start or Term_end (first: line "
            f"{first_line}); their classes were placed in the synthetic school-year session {school_year_id}"
        )
        diagnostics.append(Diagnostic.create("warning", "value.required", message, file=SECTIONS.name, line=first_line))
    sessions = pd.concat(
        [school_year, _table("academicSessions", mapped, unique[LINE_COLUMN], SECTIONS)], ignore_index=True
    )
    return sessions, term_ids, school_year_id


def _courses(sections: pd.DataFrame, school_year_id: str) -> tuple[pd.DataFrame, pd.Series]:
    """One course per distinct (school, course number, course name); returns (courses, course id per section)."""
    course_ids = _synthetic_ids("clever-course-", sections[["School_id", "Course_number", "Course_name"]])
    unique = sections.assign(sourcedId=course_ids).drop_duplicates("sourcedId")
    mapped = {
        "sourcedId": unique["sourcedId"], "schoolYearSourcedId": school_year_id, "title": unique["Course_name"],
        "courseCode": unique["Course_number"], "orgSourcedId": unique["School_id"], "subjects": unique["Subject"],
    }
    return _table("courses", mapped, unique[LINE_COLUMN], SECTIONS), course_ids


def _classes(
    sections: pd.DataFrame,
    course_ids: pd.Series,
    term_ids: pd.Series,
    profile: DistrictProfile,
    diagnostics: list[Diagnostic],
) -> pd.DataFrame:
    """One scheduled class per section; the title falls back to the course name (as Clever's own UI does)."""
    mapped = {
        "sourcedId": sections["Section_id"],
        "title": sections["Name"].where(sections["Name"] != "", sections["Course_name"]),
        "grades": _grades(sections, profile, SECTIONS.name, diagnostics),
        "courseSourcedId": course_ids, "classCode": sections["Section_number"], "classType": "scheduled",
        "schoolSourcedId": sections["School_id"], "termSourcedIds": term_ids, "subjects": sections["Subject"],
        "periods": sections["Period"],
    }
    return _table("classes", mapped, sections[LINE_COLUMN], SECTIONS)


def _users(
    students: pd.DataFrame, teachers: pd.DataFrame, profile: DistrictProfile, diagnostics: list[Diagnostic]
) -> pd.DataFrame:
    """Students then teachers, enabled, in their school; the username falls back to the e-mail address."""
    converted = [
        _user_table(students, STUDENTS, "Student_id", "student", "Student_number", "State_id", "Student_email",
                    _grades(students, profile, STUDENTS.name, diagnostics)),
        _user_table(teachers, TEACHERS, "Teacher_id", "teacher", "Teacher_number", "State_teacher_id", "Teacher_email",
                    ""),
    ]
    return pd.concat(converted, ignore_index=True)


def _user_table(
    people: pd.DataFrame,
    source: CleverFile,
    id_column: str,
    role: str,
    number: str,
    state_id: str,
    email: str,
    grades: pd.Series | str,
) -> pd.DataFrame:
    """users rows for one Clever people file; the Password column is never read (REFERENCE M29)."""
    user_ids = ("{StateId:" + people[state_id] + "}").where(people[state_id] != "", "")
    mapped = {
        "sourcedId": people[id_column], "enabledUser": "true", "orgSourcedIds": people["School_id"], "role": role,
        "username": people["Username"].where(people["Username"] != "", people[email]), "userIds": user_ids,
        "givenName": people["First_name"], "familyName": people["Last_name"], "middleName": people["Middle_name"],
        "identifier": people[number], "email": people[email], "grades": grades,
    }
    return _table("users", mapped, people[LINE_COLUMN], source)


def _demographics(students: pd.DataFrame, birth_dates: pd.Series, diagnostics: list[Diagnostic]) -> pd.DataFrame:
    """Dob, Gender, Race codes and Hispanic_Latino Y/N as OneRoster demographics, one row per student."""
    race = _mapped(students, "Race", {code.lower(): code for code in _RACE_FLAGS}, diagnostics)
    flags = {flag: _booleans(race == code).where(race != "", "") for code, flag in _RACE_FLAGS.items()}
    mapped = {
        "sourcedId": students["Student_id"], "birthDate": birth_dates,
        "sex": _mapped(students, "Gender", _SEX, diagnostics),
        **flags,
        "hispanicOrLatinoEthnicity": _mapped(students, "Hispanic_Latino", _YES_NO, diagnostics),
    }
    return _table("demographics", mapped, students[LINE_COLUMN], STUDENTS)


def _mapped(
    table: pd.DataFrame,
    column: str,
    mapping: Mapping[str, str],
    diagnostics: list[Diagnostic],
) -> pd.Series:
    """Values translated by `mapping` (lowercase keys, any case matches); unknown values become blank and
    are reported without the value (they are a student's demographic data)."""
    values = table[column]
    translated = values.str.lower().map(mapping).fillna("").astype("str")
    unknown = (values != "") & (translated == "")
    if unknown.any():
        first_line = int(table.loc[unknown, LINE_COLUMN].iloc[0])
        message = (
            f"{int(unknown.sum())} value(s) are not one of {', '.join(sorted(mapping))} (any case) (first: line "
            f"{first_line}); left blank"
        )
        diagnostics.append(
            Diagnostic.create("warning", "value.enum", message, file=STUDENTS.name, line=first_line, column=column)
        )
    return translated


def _enrollments(enrollments: pd.DataFrame, sections: pd.DataFrame) -> pd.DataFrame:
    """Student enrollments from enrollments.csv, then one teacher enrollment per section and listed
    teacher. The id names section, role and user, so it is stable, a student and a teacher sharing an
    id never collide, and a repeated enrollments.csv row is an exact copy validation drops."""
    students = _with_enrollment_ids(_table("enrollments", {
        "classSourcedId": enrollments["Section_id"], "schoolSourcedId": enrollments["School_id"],
        "userSourcedId": enrollments["Student_id"], "role": "student",
    }, enrollments[LINE_COLUMN], ENROLLMENTS))
    slots = sections.melt(id_vars=["Section_id", "School_id", LINE_COLUMN], value_vars=list(TEACHER_COLUMNS),
                          var_name="slot", value_name="user").query("user != ''")
    # A teacher listed twice for a section (the sandbox does it 15 times) is one enrollment; melt stacks
    # slot by slot, so the copy kept is the primary one.
    teachers = slots.drop_duplicates(["Section_id", "user"]).sort_values(LINE_COLUMN, kind="stable")
    teacher_rows = {
        "classSourcedId": teachers["Section_id"], "schoolSourcedId": teachers["School_id"],
        "userSourcedId": teachers["user"], "role": "teacher",
        "primary": _booleans(teachers["slot"] == TEACHER_COLUMNS[0]),
    }
    return pd.concat(
        [students, _with_enrollment_ids(_table("enrollments", teacher_rows, teachers[LINE_COLUMN], SECTIONS))],
        ignore_index=True,
    )


def _with_enrollment_ids(table: pd.DataFrame) -> pd.DataFrame:
    table["sourcedId"] = table["classSourcedId"] + "-" + table["role"] + "-" + table["userSourcedId"]
    return table


def _booleans(flags: pd.Series) -> pd.Series:
    """OneRoster's lowercase true/false strings."""
    return flags.map({True: "true", False: "false"}).astype("str")


def _grades(
    table: pd.DataFrame, profile: DistrictProfile, file_name: str, diagnostics: list[Diagnostic]
) -> pd.Series:
    """CEDS grade codes: the profile's grade_map first, then certain rules (9 -> 09, Kindergarten -> KG);
    one `fix.grade` per normalised value and one `value.grade_unknown` per unknown value, kept as delivered."""
    values = table["Grade"]
    normalised = values.map({value: _ceds_grade(value, profile) for value in values.unique()}).astype("str")
    changed = values != normalised
    unknown = (values != "") & ~normalised.isin(CEDS_GRADES)
    for value, rows in table[changed].groupby(values[changed], sort=True):
        first_line = int(rows[LINE_COLUMN].iloc[0])
        message = f"{len(rows)} row(s) with grade {value!r} read as {normalised[rows.index[0]]!r} (first: line {first_line})"
        diagnostics.append(
            Diagnostic.create("fixed", "fix.grade", message, file=file_name, line=first_line, column="Grade", value=value)
        )
    for value, rows in table[unknown].groupby(values[unknown], sort=True):
        message = (
            f"{len(rows)} row(s) with grade {value!r}, not a CEDS grade; kept as delivered (map it in the "
            f"district profile's grade_map)"
        )
        diagnostics.append(
            Diagnostic.create("warning", "value.grade_unknown", message, file=file_name,
                              line=int(rows[LINE_COLUMN].iloc[0]), column="Grade", value=value)
        )
    return normalised


def _ceds_grade(value: str, profile: DistrictProfile) -> str:
    """One delivered grade as a CEDS code when the profile or a certain rule says so, else as delivered."""
    if value in profile.grade_map:
        return profile.grade_map[value]
    if value.isdigit() and 1 <= int(value) <= 13:
        return f"{int(value):02d}"
    return _GRADE_WORDS.get(value.lower(), value)


# --- dates ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _DateColumn:
    """A date column of a Clever file and the OneRoster column it feeds (which decides masking)."""

    file: str
    column: str
    target: str
    table: pd.DataFrame


class _DateConverter:
    """Converts every date of a delivery to `YYYY-MM-DD` with the district profile's `date_format`.

    Clever exports write `M/D/YY`, but nothing in one value proves the day/month order of `03/04/15`,
    and a wrong guess silently moves every term and birth date. So without a `date_format` that a
    person confirmed for the district, non-ISO dates are reported (`value.date_ambiguous`) and their
    records rejected by validation: never guessed, not even from other dates of the delivery.
    """

    def __init__(self, columns: list[_DateColumn], profile: DistrictProfile, diagnostics: list[Diagnostic]) -> None:
        self._diagnostics = diagnostics
        self._converted = {column.column: self._convert(column, profile.date_format) for column in columns}

    def converted(self, column: str) -> pd.Series:
        return self._converted[column]

    def _convert(self, column: _DateColumn, date_format: str | None) -> pd.Series:
        values = column.table[column.column]
        iso = values.str.fullmatch(_ISO_DATE)
        if date_format:
            parsed = pd.to_datetime(values.where(~iso, ""), format=date_format, errors="coerce")
        else:
            parsed = pd.Series(pd.NaT, index=values.index)
        convertible = parsed.notna() & ~iso
        converted = values.where(~convertible, parsed.dt.strftime("%Y-%m-%d")).astype("str")
        undecided = (values != "") & ~iso & ~convertible & values.str.fullmatch(_SLASH_DATE) & (date_format is None)
        invalid = (values != "") & ~iso & ~convertible & ~undecided
        if convertible.any():
            first_line = int(column.table.loc[convertible, LINE_COLUMN].iloc[0])
            message = (
                f"{int(convertible.sum())} date(s) converted to YYYY-MM-DD (first: line {first_line}) with the "
                f"district profile's date_format {date_format!r}"
            )
            self._diagnostics.append(
                Diagnostic.create("fixed", "fix.date_format", message, file=column.file, line=first_line,
                                  column=column.column)
            )
        self._report_rows(column, undecided, "value.date_ambiguous",
                          "the date is not YYYY-MM-DD and its day/month order is not confirmed; set the district "
                          "profile's date_format (Clever exports usually write %m/%d/%y)")
        self._report_rows(column, invalid, "value.date",
                          "not a calendar date in YYYY-MM-DD or the district profile's date_format")
        return converted

    def _report_rows(self, column: _DateColumn, rows: pd.Series, rule: str, message: str) -> None:
        """One error per row: the record that needs this date is rejected by validation."""
        for line, value in zip(column.table.loc[rows, LINE_COLUMN], column.table.loc[rows, column.column]):
            self._diagnostics.append(
                Diagnostic.create("error", rule, message, file=column.file, line=int(line), column=column.column,
                                  value=mask(column.target, value))
            )
