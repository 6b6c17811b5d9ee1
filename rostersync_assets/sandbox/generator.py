"""A deterministic synthetic OneRoster 1.1 district, its nightly changes, and bulk deliveries of it.

The demo, the tests and the benchmarks all need rosters that look like a real district's (schools,
terms, courses, sections, teachers, students, enrollments, demographics) without anyone's real data,
and nightly deliveries whose exact effect is known in advance so a sync can be checked against it.

Tables are columnar pandas DataFrames of `str` (Arrow-backed in pandas 3): at 8,000,000 enrollments
one dict per row would cost gigabytes, and vectorised column building keeps 100k students to about
a second. Randomness comes from numpy generators seeded by `seed` (and `night`), never from the
clock or hash order, so the same arguments give byte-identical files.
"""

from __future__ import annotations

import csv
import os
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import pandas as pd

from rostersync_assets.oneroster.spec import ENTITIES, MANIFEST_FILE, SPECS

# The school year every generated district lives in: fixed, so output never depends on the clock.
SCHOOL_YEAR_END = 2026
STUDENTS_PER_SCHOOL = 500
STUDENTS_PER_TEACHER = 17
CLASSES_PER_STUDENT = 6
MAX_SECTION_SIZE = 25
PERIODS_PER_DAY = 8
FIRST_ROOM = 101

# Nightly change rates (fractions of the current rows).
NEW_STUDENT_RATE = 0.01
CHANGED_USER_RATE = 0.01
DROPPED_ENROLLMENT_RATE = 0.005
CLASSES_PER_CLASS_CHANGE = 200

# Student numbers (identifier, userIds) are offset from the sourcedId so the two never look alike.
STUDENT_NUMBER_BASE = 2_000_000
# Share of students with each flag (the two-or-more-races flag follows from the others).
RACE_RATES: dict[str, float] = {
    "americanIndianOrAlaskaNative": 0.02,
    "asian": 0.08,
    "blackOrAfricanAmerican": 0.16,
    "nativeHawaiianOrOtherPacificIslander": 0.01,
    "white": 0.55,
    "hispanicOrLatinoEthnicity": 0.27,
}

# OneRoster 1.1 data files rostersync does not sync: `absent` in the manifest (REFERENCE §2).
UNSYNCED_FILES: tuple[str, ...] = (
    "categories",
    "classResources",
    "courseResources",
    "lineItems",
    "resources",
    "results",
)
SOURCE_SYSTEM_NAME = "rostersync generator"

GRADE_CODES: tuple[str, ...] = ("KG",) + tuple(f"{grade:02d}" for grade in range(1, 13))

# (subject, code used in courseCode); the first CORE_SUBJECTS run all year, the rest one semester.
SUBJECTS: tuple[tuple[str, str], ...] = (
    ("Mathematics", "MATH"),
    ("English Language Arts", "ELA"),
    ("Science", "SCI"),
    ("Social Studies", "SOC"),
    ("Art", "ART"),
    ("Music", "MUS"),
    ("Physical Education", "PE"),
    ("World Languages", "WL"),
)
CORE_SUBJECTS = 4

# Invented names; accents, hyphens and an apostrophe exercise UTF-8 and unquoted punctuation.
GIVEN_NAMES: tuple[str, ...] = (
    "Ada", "Amara", "Bastian", "Bea", "Caius", "Chloé", "Dario", "Delphine", "Eero", "Elin",
    "Fenna", "Florin", "Greer", "Hale", "Ines", "Iver", "Jalen", "Jovana", "Kaito", "Keziah",
    "Linnea", "Lorcan", "Maren", "Mateo", "Nadia", "Niko", "Oona", "Orrin", "Paloma", "Quill",
    "Renée", "Rowan", "Saoirse", "Soren", "Talia", "Tobin", "Una", "Vesna", "Wren", "Yusuf",
    "Zara", "Zoë",
)  # fmt: skip
FAMILY_NAMES: tuple[str, ...] = (
    "Alderwick", "Ambrose-Lyle", "Ashmere", "Barrowfield", "Blackthorne", "Brindlemoor",
    "Caskell", "Coldbrook", "Dunmore", "D'Aubigny", "Ellingsworth", "Fairholt", "Fenwright",
    "Gallowmere", "Greystrand", "Halloway", "Hollins-Reyes", "Ivoryton", "Jesperson", "Kettleby",
    "Larkspur", "Lindqvist", "Marchetti", "Mosswood", "Northcote", "Núñez-Arroyo", "Oakhurst",
    "Pemberly", "Quenneville", "Ravensworth", "Sallowby", "Søndergaard", "Thistlewood",
    "Underhill", "Vantongeren", "Whitlock", "Wyndham", "Yarborough", "Zellweger",
)  # fmt: skip
PLACE_NAMES: tuple[str, ...] = (
    "Alder Creek", "Birchwood", "Cedar Hollow", "Driftwood", "Elm Ridge", "Foxglove",
    "Granite Falls", "Heron Lake", "Ironwood", "Juniper Hill", "Kestrel Point", "Larch Valley",
    "Maple Bend", "North Meadow", "Oak Terrace", "Pine Harbor", "Quarry Park", "Riverside",
    "Stonebridge", "Tamarack", "Upland", "Willow Glen",
)  # fmt: skip
_FAMILY_INDEX = {name: index for index, name in enumerate(FAMILY_NAMES)}
_HONORS = " (Honors)"
_DISTRICT_SLUG = re.compile(r"[A-Za-z0-9-]+")

# What a table column can be built from: a scalar is repeated, anything array-like is converted.
Column = str | Sequence[str] | pd.Series | pd.api.extensions.ExtensionArray


@dataclass(frozen=True)
class _Band:
    """The contiguous run of GRADE_CODES a kind of school teaches."""

    kind: str
    first: int
    count: int

    @property
    def grades(self) -> tuple[str, ...]:
        return GRADE_CODES[self.first : self.first + self.count]


_ELEMENTARY = _Band("Elementary", 0, 6)
_MIDDLE = _Band("Middle", 6, 3)
_HIGH = _Band("High", 9, 4)
# A one-school district is a K-12 school; larger ones cycle with twice as many elementary schools.
_K12 = _Band("Community", 0, len(GRADE_CODES))
_BAND_CYCLE = (_ELEMENTARY, _MIDDLE, _HIGH, _ELEMENTARY)


@dataclass(eq=False)
class DistrictRoster:
    """One district's OneRoster data: entity -> DataFrame with every spec column, in spec order.

    Every value is a `str` and blanks are "" (never NaN), exactly what the CSV files will hold.
    `eq=False` because comparing DataFrames with `==` is element-wise, not a truth value.
    """

    tables: dict[str, pd.DataFrame]

    def rows(self, entity: str) -> Iterator[dict[str, str]]:
        """One entity's rows as dicts, one at a time (for small-scale checks such as the demo's)."""
        frame = self.tables[entity]
        columns = list(frame.columns)
        for values in frame.itertuples(index=False, name=None):
            yield dict(zip(columns, values))

    def summary(self) -> str:
        """Row counts per entity, for progress lines: `orgs 4, academicSessions 3, ...`."""
        return ", ".join(f"{entity} {len(frame):,}" for entity, frame in self.tables.items())


@dataclass(frozen=True)
class ExpectedChanges:
    """What a nightly delivery changes relative to the previous one: entity -> sourcedIds.

    `updated` rows differ from yesterday's in at least one column; `removed` rows are gone from the
    bulk file, which a consumer must treat as deactivated. Every entity key is present.
    """

    created: dict[str, set[str]]
    updated: dict[str, set[str]]
    removed: dict[str, set[str]]

    def counts(self) -> dict[str, int]:
        """Totals over all entities, in the vocabulary of the sync's own report."""
        return {
            "created": sum(map(len, self.created.values())),
            "updated": sum(map(len, self.updated.values())),
            "deactivated": sum(map(len, self.removed.values())),
        }


# --- column helpers ---------------------------------------------------------------------------


def _frame(entity: str, rows: int, values: Mapping[str, Column]) -> pd.DataFrame:
    """A table of `entity` with every spec column in order; unnamed columns are blank.

    A misspelt column name would otherwise silently become a blank column, so it raises.
    """
    columns = SPECS[entity].columns
    if unknown := set(values) - set(columns):
        raise ValueError(f"{entity} has no columns {sorted(unknown)}")
    return pd.DataFrame(
        {column: _column(values.get(column, ""), rows) for column in columns},
        index=pd.RangeIndex(rows),
    )


def _column(value: Column, rows: int) -> pd.api.extensions.ExtensionArray:
    """A `str` column of `rows` values (converting a column that already is `str` costs nothing)."""
    if isinstance(value, str):
        return pd.array([value], dtype="str").take(np.zeros(rows, dtype=np.intp))
    return pd.array(value, dtype="str")


def _pick(choices: Sequence[str], index: np.ndarray) -> pd.Series:
    """`choices[index]` for a whole array of indices, without creating per-row Python strings."""
    return pd.Series(pd.array(list(choices), dtype="str").take(index))


def _numbered(prefix: str, numbers: np.ndarray, width: int) -> pd.Series:
    """Ids like `cls-0000042`: the zero padding keeps them sortable and leading zeros exercised."""
    return prefix + pd.Series(numbers).astype("str").str.zfill(width)


def _ascii_login(name: str) -> str:
    """A name as it appears in a username: accents folded, only lowercase letters and digits."""
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]", "", folded.lower())


_GIVEN_LOGINS = tuple(map(_ascii_login, GIVEN_NAMES))
_FAMILY_LOGINS = tuple(map(_ascii_login, FAMILY_NAMES))


def _split_evenly(total: int, parts: int) -> np.ndarray:
    """`parts` sizes summing to `total` that differ by at most one."""
    edges = np.arange(parts + 1) * total // parts
    return np.diff(edges)


def _group_starts(counts: np.ndarray) -> np.ndarray:
    """The offset of each group in a flat array of groups laid end to end."""
    return np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)


def _email_domains(district: str) -> tuple[str, str]:
    """The district's two mail domains: a nightly email change moves a user to the other one."""
    return f"{district}.example.org", f"{district}.example.net"


def _session_ids() -> tuple[str, str, str]:
    """The school year's and its two semesters' sourcedIds."""
    year = f"ses-{SCHOOL_YEAR_END}"
    return year, f"{year}-s1", f"{year}-s2"


# --- the district -----------------------------------------------------------------------------


def generate_district(
    *,
    students: int,
    seed: int,
    district: str = "demo-district",
    teachers: int | None = None,
    classes_per_student: int = CLASSES_PER_STUDENT,
) -> DistrictRoster:
    """A whole synthetic district as a bulk snapshot; the same arguments give the same bytes.

    `district` is a slug (letters, digits, hyphens) because it becomes the district org's
    identifier and the users' email domain. `teachers` (default: one per STUDENTS_PER_TEACHER
    students of each school) and `classes_per_student` (at most one class per subject) let a
    benchmark build the exact shape it is specified for, such as 60,000 teachers for 1M students.
    """
    if students < 1:
        raise ValueError("a district needs at least one student")
    if not 1 <= classes_per_student <= len(SUBJECTS):
        raise ValueError(f"classes_per_student must be 1 to {len(SUBJECTS)} (one class per subject)")
    if not _DISTRICT_SLUG.fullmatch(district):
        raise ValueError(f"district must be a slug of letters, digits and hyphens: {district!r}")
    rng = np.random.default_rng(seed)
    bands = _school_bands(max(1, round(students / STUDENTS_PER_SCHOOL)))
    school_ids = _numbered("org-", np.arange(1, len(bands) + 1), 6)
    students_per_school = _split_evenly(students, len(bands))
    student_school = np.repeat(np.arange(len(bands)), students_per_school)
    band_count = np.array([band.count for band in bands])
    grade_position = (rng.random(students) * band_count[student_school]).astype(np.int64)

    courses = _courses(bands, school_ids)
    # Courses are laid out school by school, grade by grade, subject by subject.
    courses_per_school = band_count * len(SUBJECTS)
    course_starts = _group_starts(courses_per_school)
    course_school = np.repeat(np.arange(len(bands)), courses_per_school)
    student_course = (
        course_starts[student_school, None]
        + grade_position[:, None] * len(SUBJECTS)
        + _chosen_subjects(rng, students, classes_per_student)
    ).ravel()
    class_course, class_section, class_of_enrollment = _sections(student_course, len(courses))
    if teachers is None:
        teachers_per_school = np.maximum(1, np.round(students_per_school / STUDENTS_PER_TEACHER))
    elif teachers < len(bands):
        raise ValueError(f"every one of the {len(bands)} schools needs a teacher")
    else:
        teachers_per_school = _split_evenly(teachers, len(bands))
    teachers_per_school = teachers_per_school.astype(np.int64)
    teacher_users = _teachers(rng, teachers_per_school, school_ids, district)
    classes, class_teacher = _classes(
        courses, class_course, class_section, course_school[class_course], teachers_per_school
    )
    band_first = np.array([band.first for band in bands])
    student_users, demographics = _student_tables(
        rng,
        numbers=np.arange(1, students + 1),
        schools=school_ids.array.take(student_school),
        grade_index=band_first[student_school] + grade_position,
        district=district,
    )
    return DistrictRoster(
        tables={
            "orgs": _orgs(district, bands, school_ids),
            "academicSessions": _academic_sessions(),
            "courses": courses,
            "classes": classes,
            "users": pd.concat([teacher_users, student_users], ignore_index=True),
            "demographics": demographics,
            "enrollments": _bulk_enrollments(
                classes,
                teacher_ids=teacher_users["sourcedId"].array.take(class_teacher),
                student_ids=student_users["sourcedId"].array,
                class_of_enrollment=class_of_enrollment,
            ),
        }
    )


def _school_bands(schools: int) -> list[_Band]:
    """Which grades each school teaches: elementary, middle and high schools mixed."""
    if schools == 1:
        return [_K12]
    return [_BAND_CYCLE[index % len(_BAND_CYCLE)] for index in range(schools)]


def _orgs(district: str, bands: Sequence[_Band], school_ids: pd.Series) -> pd.DataFrame:
    """The district org and its schools, every school's parent being the district."""
    district_id = "org-000000"
    names = [
        f"{PLACE_NAMES[index % len(PLACE_NAMES)]} {band.kind} School"
        + (f" {index // len(PLACE_NAMES) + 1}" if index >= len(PLACE_NAMES) else "")
        for index, band in enumerate(bands)
    ]
    district_name = district.replace("-", " ").title() + " School District"
    return _frame(
        "orgs",
        len(bands) + 1,
        {
            "sourcedId": [district_id, *school_ids],
            "name": [district_name, *names],
            "type": ["district"] + ["school"] * len(bands),
            "identifier": [district] + [f"{index:04d}" for index in range(1, len(bands) + 1)],
            "parentSourcedId": [""] + [district_id] * len(bands),
        },
    )


def _academic_sessions() -> pd.DataFrame:
    """The school year and its two semesters (`schoolYear` is the year the school year ends)."""
    year_id, fall_id, spring_id = _session_ids()
    start, end = SCHOOL_YEAR_END - 1, SCHOOL_YEAR_END
    return _frame(
        "academicSessions",
        3,
        {
            "sourcedId": [year_id, fall_id, spring_id],
            "title": [f"{start}-{end}", f"Fall {start}", f"Spring {end}"],
            "type": ["schoolYear", "semester", "semester"],
            "startDate": [f"{start}-08-17", f"{start}-08-17", f"{end}-01-12"],
            "endDate": [f"{end}-06-12", f"{end}-01-09", f"{end}-06-12"],
            "parentSourcedId": ["", year_id, year_id],
            "schoolYear": str(end),
        },
    )


def _grade_label(grade: str) -> str:
    return "Kindergarten" if grade == "KG" else f"Grade {int(grade)}"


def _courses(bands: Sequence[_Band], school_ids: pd.Series) -> pd.DataFrame:
    """One course per school, grade and subject, in that nesting order.

    So course index = school start + grade position * len(SUBJECTS) + subject index, and a
    course's subject index is its index modulo len(SUBJECTS) (every school start is a multiple).
    """
    layout = [
        (school_id, grade, subject, code)
        for school_id, band in zip(school_ids, bands)
        for grade in band.grades
        for subject, code in SUBJECTS
    ]
    schools, grades, subjects, codes = (list(column) for column in zip(*layout))
    return _frame(
        "courses",
        len(layout),
        {
            "sourcedId": _numbered("crs-", np.arange(1, len(layout) + 1), 6),
            "schoolYearSourcedId": _session_ids()[0],
            "title": [f"{s} {_grade_label(g)}" for s, g in zip(subjects, grades)],
            "courseCode": [f"{c}-{g}" for c, g in zip(codes, grades)],
            "grades": grades,
            "orgSourcedId": schools,
            "subjects": subjects,
        },
    )


def _chosen_subjects(rng: np.random.Generator, students: int, per_student: int) -> np.ndarray:
    """Each student's `per_student` distinct subject indices, ascending."""
    shuffled = np.argsort(rng.random((students, len(SUBJECTS))), axis=1)
    return np.sort(shuffled[:, :per_student], axis=1)


def _sections(
    student_course: np.ndarray, courses: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split each course's students into sections of at most MAX_SECTION_SIZE.

    Returns each class's course and section number (classes laid out course by course) and each
    enrollment's class. Students are dealt round-robin so a course's sections are even.
    """
    per_course = np.bincount(student_course, minlength=courses)
    sections = np.maximum(1, -(-per_course // MAX_SECTION_SIZE))
    order = np.argsort(student_course, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order)) - _group_starts(per_course)[student_course[order]]
    class_starts = _group_starts(sections)
    class_of_enrollment = class_starts[student_course] + rank % sections[student_course]
    class_course = np.repeat(np.arange(courses), sections)
    class_section = np.arange(len(class_course)) - class_starts[class_course]
    return class_course, class_section, class_of_enrollment


def _classes(
    courses: pd.DataFrame,
    class_course: np.ndarray,
    class_section: np.ndarray,
    class_school: np.ndarray,
    teachers_per_school: np.ndarray,
) -> tuple[pd.DataFrame, np.ndarray]:
    """The scheduled classes (sections), and each class's teacher (global teacher index).

    A school's classes are dealt to its teachers in contiguous runs, so a teacher mostly teaches
    one subject; a class meets in its teacher's room, consecutive classes in consecutive periods.
    """
    per_school = np.bincount(class_school, minlength=len(teachers_per_school))
    class_rank = np.arange(len(class_course)) - _group_starts(per_school)[class_school]
    teacher_rank = class_rank * teachers_per_school[class_school] // per_school[class_school]
    class_teacher = _group_starts(teachers_per_school)[class_school] + teacher_rank
    year_id, fall_id, spring_id = _session_ids()
    is_core = class_course % len(SUBJECTS) < CORE_SUBJECTS
    term_choice = np.where(is_core, 0, 1 + class_section % 2)
    section = pd.Series(class_section + 1).astype("str")
    of_course = {column: pd.Series(courses[column].array.take(class_course)) for column in courses}
    classes = _frame(
        "classes",
        len(class_course),
        {
            "sourcedId": _numbered("cls-", np.arange(1, len(class_course) + 1), 7),
            "title": of_course["title"] + " - Section " + section,
            "grades": of_course["grades"],
            "courseSourcedId": of_course["sourcedId"],
            "classCode": of_course["courseCode"] + "-" + section.str.zfill(2),
            "classType": "scheduled",
            "location": "Room " + pd.Series(FIRST_ROOM + teacher_rank).astype("str"),
            "schoolSourcedId": of_course["orgSourcedId"],
            "termSourcedIds": _pick([f"{fall_id},{spring_id}", fall_id, spring_id], term_choice),
            "subjects": of_course["subjects"],
            "periods": pd.Series(1 + class_rank % PERIODS_PER_DAY).astype("str"),
        },
    )
    return classes, class_teacher


def _people(
    rng: np.random.Generator, tags: pd.Series, district: str
) -> dict[str, pd.Series]:
    """Invented names, and a username and email made unique by each person's `tag`."""
    count = len(tags)
    given = rng.integers(len(GIVEN_NAMES), size=count)
    family = rng.integers(len(FAMILY_NAMES), size=count)
    # About a third have a middle name; index 0 of the padded list is "no middle name".
    middle = np.where(rng.random(count) < 0.35, 1 + rng.integers(len(GIVEN_NAMES), size=count), 0)
    username = _pick(_GIVEN_LOGINS, given) + "." + _pick(_FAMILY_LOGINS, family) + tags
    return {
        "givenName": _pick(GIVEN_NAMES, given),
        "familyName": _pick(FAMILY_NAMES, family),
        "middleName": _pick(("",) + GIVEN_NAMES, middle),
        "username": username,
        "email": username + "@" + _email_domains(district)[0],
    }


def _teachers(
    rng: np.random.Generator,
    teachers_per_school: np.ndarray,
    school_ids: pd.Series,
    district: str,
) -> pd.DataFrame:
    """Each school's teachers, numbered across the district."""
    count = int(teachers_per_school.sum())
    numbers = pd.Series(np.arange(1, count + 1)).astype("str").str.zfill(6)
    return _frame(
        "users",
        count,
        {
            "sourcedId": "tch-" + numbers,
            "enabledUser": "true",
            "orgSourcedIds": school_ids.array.take(
                np.repeat(np.arange(len(teachers_per_school)), teachers_per_school)
            ),
            "role": "teacher",
            "userIds": "{SIS:T" + numbers + "}",
            "identifier": "T" + numbers,
            **_people(rng, ".t" + numbers, district),
        },
    )


def _student_tables(
    rng: np.random.Generator,
    *,
    numbers: np.ndarray,
    schools: Column,
    grade_index: np.ndarray,
    district: str,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Students' users and demographics rows: `numbers` make their ids, `grade_index` their grades.

    Student sourcedIds are all digits with leading zeros (`0000042`), as many SIS exports have,
    so any reader that lets a CSV library guess types corrupts them.
    """
    count = len(numbers)
    ids = pd.Series(numbers).astype("str").str.zfill(7)
    student_number = pd.Series(STUDENT_NUMBER_BASE + numbers).astype("str")
    users = _frame(
        "users",
        count,
        {
            "sourcedId": ids,
            "enabledUser": "true",
            "orgSourcedIds": schools,
            "role": "student",
            "userIds": "{SIS:" + student_number + "}",
            "identifier": student_number,
            "grades": _pick(GRADE_CODES, grade_index),
            **_people(rng, student_number, district),
        },
    )
    return users, _demographics(rng, ids, grade_index)


def _demographics(
    rng: np.random.Generator, ids: pd.Series, grade_index: np.ndarray
) -> pd.DataFrame:
    """Birth dates that fit each student's grade, sex, and race/ethnicity flags."""
    count = len(ids)
    # Kindergartners are 5 on September 1 of the first school year; each grade is a year older.
    birth_year = SCHOOL_YEAR_END - 1 - 6 - grade_index
    first_day = (birth_year - 1970).astype("datetime64[Y]").astype("datetime64[D]") + 244
    flags = {name: rng.random(count) < rate for name, rate in RACE_RATES.items()}
    races = [flag for name, flag in flags.items() if name != "hispanicOrLatinoEthnicity"]
    flags["demographicRaceTwoOrMoreRaces"] = np.sum(races, axis=0) >= 2
    booleans = {name: _pick(("false", "true"), flag.astype(int)) for name, flag in flags.items()}
    return _frame(
        "demographics",
        count,
        {
            "sourcedId": ids,
            "birthDate": _dates(first_day + rng.integers(365, size=count)),
            "sex": _pick(("female", "male"), rng.integers(2, size=count)),
            "countryOfBirthCode": _pick(("US", ""), (rng.random(count) < 0.08).astype(np.intp)),
            **booleans,
        },
    )


def _dates(days: np.ndarray) -> pd.Series:
    """`YYYY-MM-DD` strings; formatted once per distinct day, as there are few."""
    distinct, index = np.unique(days, return_inverse=True)
    return _pick(np.datetime_as_string(distinct, unit="D").tolist(), index)


def _bulk_enrollments(
    classes: pd.DataFrame,
    *,
    teacher_ids: pd.api.extensions.ExtensionArray,
    student_ids: pd.api.extensions.ExtensionArray,
    class_of_enrollment: np.ndarray,
) -> pd.DataFrame:
    """Each class's primary teacher, then every student's classes (the same number for each student)."""
    ids = _numbered("enr-", np.arange(1, len(classes) + len(class_of_enrollment) + 1), 8).array
    teacher_part = _enrollments(
        ids[: len(classes)],
        classes["sourcedId"],
        classes["schoolSourcedId"],
        teacher_ids,
        role="teacher",
    )
    student_part = _enrollments(
        ids[len(classes) :],
        classes["sourcedId"].array.take(class_of_enrollment),
        classes["schoolSourcedId"].array.take(class_of_enrollment),
        student_ids.take(np.repeat(np.arange(len(student_ids)), len(class_of_enrollment) // len(student_ids))),
        role="student",
    )
    return pd.concat([teacher_part, student_part], ignore_index=True)


def _enrollments(
    ids: Column, class_ids: Column, school_ids: Column, user_ids: Column, *, role: str
) -> pd.DataFrame:
    """Enrollment rows; a teacher's enrollment is the class's primary one, a student's never is."""
    return _frame(
        "enrollments",
        len(class_ids),
        {
            "sourcedId": ids,
            "classSourcedId": class_ids,
            "schoolSourcedId": school_ids,
            "userSourcedId": user_ids,
            "role": role,
            "primary": "true" if role == "teacher" else "false",
        },
    )


# --- nightly changes --------------------------------------------------------------------------

# How a changed user or class differs from yesterday: each kind changes at least one value.
_EMAIL, _FAMILY_NAME, _GRADE = range(3)
_TITLE, _ROOM, _MOVED = range(3)


def next_night(
    roster: DistrictRoster, *, seed: int, night: int
) -> tuple[DistrictRoster, ExpectedChanges]:
    """Tomorrow's bulk snapshot of `roster` and exactly how it differs; `roster` is left as is.

    The mix a district's SIS produces overnight: new students (with their demographics and
    enrollments), changed users (email, family name or grade), a few renamed or re-roomed classes,
    one class moved to another room and period, and dropped student enrollments. Deterministic in
    (seed, night); nights of one chain must be distinct, as new enrollment ids carry the night.
    """
    rng = np.random.default_rng([seed, night])
    tables = roster.tables
    district = _district_slug(tables["orgs"])
    users, changed_users = _change_users(
        rng, tables["users"], _school_grades(tables["courses"]), _email_domains(district)
    )
    classes, changed_classes = _change_classes(rng, tables["classes"])
    enrollments, dropped = _drop_enrollments(rng, tables["enrollments"])
    new_users, new_demographics, new_enrollments = _new_students(rng, tables, night, district)
    tonight = {
        **{entity: frame.copy(deep=False) for entity, frame in tables.items()},
        "users": pd.concat([users, new_users], ignore_index=True),
        "classes": classes,
        "demographics": pd.concat([tables["demographics"], new_demographics], ignore_index=True),
        "enrollments": pd.concat([enrollments, new_enrollments], ignore_index=True),
    }
    expected = ExpectedChanges(
        created=_by_entity(
            users=set(new_users["sourcedId"]),
            demographics=set(new_demographics["sourcedId"]),
            enrollments=set(new_enrollments["sourcedId"]),
        ),
        updated=_by_entity(users=changed_users, classes=changed_classes),
        removed=_by_entity(enrollments=dropped),
    )
    return DistrictRoster(tables=tonight), expected


def _by_entity(**ids: set[str]) -> dict[str, set[str]]:
    """Every synced entity, with no ids unless given."""
    return {entity: ids.get(entity, set()) for entity in ENTITIES}


def _share(population: int, rate: float) -> int:
    """About `rate` of `population` but at least one, so every night has each kind of change."""
    return max(1, round(population * rate))


def _sample(rng: np.random.Generator, population: int, count: int) -> np.ndarray:
    """`count` distinct row positions (at most all of them), ascending."""
    return np.sort(rng.choice(population, size=min(count, population), replace=False))


def _with_values(
    frame: pd.DataFrame, rows: np.ndarray, values: Mapping[str, Sequence[str]]
) -> pd.DataFrame:
    """A copy of `frame` with `values[column]` written into `rows` (copy-on-write: cheap)."""
    changed = frame.copy(deep=False)
    for column, column_values in values.items():
        changed.iloc[rows, changed.columns.get_loc(column)] = list(column_values)
    return changed


def _school_grades(courses: pd.DataFrame) -> dict[str, list[str]]:
    """The grades each school teaches, read back from its courses."""
    grades = courses.groupby("orgSourcedId", sort=True)["grades"].unique()
    return {school: sorted(values) for school, values in grades.items()}


def _change_users(
    rng: np.random.Generator,
    users: pd.DataFrame,
    school_grades: Mapping[str, list[str]],
    domains: tuple[str, str],
) -> tuple[pd.DataFrame, set[str]]:
    """About CHANGED_USER_RATE of users get a new email, family name or (students only) grade."""
    rows = _sample(rng, len(users), _share(len(users), CHANGED_USER_RATE))
    picked = users.iloc[rows]
    kinds = rng.integers(3, size=len(rows))
    kinds[(kinds == _GRADE) & (picked["role"] != "student").to_numpy()] = _EMAIL
    steps = rng.integers(1 << 30, size=len(rows))
    changed = _with_values(
        users,
        rows,
        {
            "email": [
                _other_domain(email, domains) if kind == _EMAIL else email
                for email, kind in zip(picked["email"], kinds)
            ],
            "familyName": [
                _other_family_name(name, step) if kind == _FAMILY_NAME else name
                for name, kind, step in zip(picked["familyName"], kinds, steps)
            ],
            "grades": [
                _other_grade(grade, school_grades[school], step) if kind == _GRADE else grade
                for grade, school, kind, step in zip(
                    picked["grades"], picked["orgSourcedIds"], kinds, steps
                )
            ],
        },
    )
    return changed, set(picked["sourcedId"])


def _district_slug(orgs: pd.DataFrame) -> str:
    """The district slug generate_district was given, read back from the district org."""
    return orgs.loc[orgs["type"] == "district", "identifier"].iloc[0]


def _other_domain(email: str, domains: tuple[str, str]) -> str:
    """The same mailbox at the district's other domain."""
    local, _, domain = email.rpartition("@")
    return f"{local}@{domains[1] if domain == domains[0] else domains[0]}"


def _other_family_name(name: str, step: int) -> str:
    """Another family name from the list (a name not in the list is replaced by one that is)."""
    offset = 1 + step % (len(FAMILY_NAMES) - 1)
    return FAMILY_NAMES[(_FAMILY_INDEX.get(name, 0) + offset) % len(FAMILY_NAMES)]


def _other_grade(grade: str, school_grades: Sequence[str], step: int) -> str:
    """Another grade of the student's school (every generated school teaches at least three)."""
    position = school_grades.index(grade) if grade in school_grades else 0
    offset = 1 + step % (len(school_grades) - 1)
    return school_grades[(position + offset) % len(school_grades)]


def _change_classes(
    rng: np.random.Generator, classes: pd.DataFrame
) -> tuple[pd.DataFrame, set[str]]:
    """A few classes renamed or re-roomed, and one moved to another room and another period."""
    rows = _sample(rng, len(classes), 1 + _share(len(classes), 1 / CLASSES_PER_CLASS_CHANGE))
    picked = classes.iloc[rows]
    kinds = rng.integers(2, size=len(rows))
    kinds[rng.integers(len(rows))] = _MOVED
    steps = rng.integers(1 << 30, size=len(rows))
    changed = _with_values(
        classes,
        rows,
        {
            "title": [
                _toggle_honors(title) if kind == _TITLE else title
                for title, kind in zip(picked["title"], kinds)
            ],
            "location": [
                _other_room(location, step) if kind in (_ROOM, _MOVED) else location
                for location, kind, step in zip(picked["location"], kinds, steps)
            ],
            "periods": [
                _next_period(periods) if kind == _MOVED else periods
                for periods, kind in zip(picked["periods"], kinds)
            ],
        },
    )
    return changed, set(picked["sourcedId"])


def _toggle_honors(title: str) -> str:
    """The title with the honors suffix added, or removed if it has one: never the same title."""
    return title.removesuffix(_HONORS) if title.endswith(_HONORS) else title + _HONORS


def _other_room(location: str, step: int) -> str:
    """A room a few numbers away from `Room N`."""
    return f"Room {int(location.removeprefix('Room ')) + 1 + step % 20}"


def _next_period(periods: str) -> str:
    """The following period of the day, wrapping after the last."""
    return str(int(periods) % PERIODS_PER_DAY + 1)


def _drop_enrollments(
    rng: np.random.Generator, enrollments: pd.DataFrame
) -> tuple[pd.DataFrame, set[str]]:
    """About DROPPED_ENROLLMENT_RATE of student enrollments leave the file (teachers' never do)."""
    student_rows = np.flatnonzero((enrollments["role"] == "student").to_numpy())
    count = _share(len(student_rows), DROPPED_ENROLLMENT_RATE)
    rows = student_rows[_sample(rng, len(student_rows), count)]
    keep = np.ones(len(enrollments), dtype=bool)
    keep[rows] = False
    dropped = set(enrollments["sourcedId"].iloc[rows])
    return enrollments[keep].reset_index(drop=True), dropped


def _new_students(
    rng: np.random.Generator, tables: Mapping[str, pd.DataFrame], night: int, district: str
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """About NEW_STUDENT_RATE new students: users, demographics and enrollments rows.

    Each joins a random school and grade and an existing section of CLASSES_PER_STUDENT of that
    grade's courses, as a mid-year transfer does.
    """
    users = tables["users"]
    student_ids = users.loc[users["role"] == "student", "sourcedId"]
    first = int(student_ids.astype("int64").max()) + 1 if len(student_ids) else 1
    count = _share(len(student_ids), NEW_STUDENT_RATE)
    catalogue = _catalogue(tables["courses"], tables["classes"])
    places = sorted(catalogue)
    joined = [places[index] for index in rng.integers(len(places), size=count)]
    new_users, new_demographics = _student_tables(
        rng,
        numbers=np.arange(first, first + count),
        schools=[school for school, _ in joined],
        grade_index=np.array([GRADE_CODES.index(grade) for _, grade in joined]),
        district=district,
    )
    class_ids, school_ids, user_ids = [], [], []
    for user_id, place in zip(new_users["sourcedId"], joined):
        courses = catalogue[place]
        taken = min(CLASSES_PER_STUDENT, len(courses))
        for course in rng.choice(len(courses), size=taken, replace=False):
            sections = courses[course]
            class_ids.append(sections[rng.integers(len(sections))])
            school_ids.append(place[0])
            user_ids.append(user_id)
    ids = _numbered(f"enr-n{night:03d}-", np.arange(1, len(class_ids) + 1), 6)
    new_enrollments = _enrollments(ids, class_ids, school_ids, user_ids, role="student")
    return new_users, new_demographics, new_enrollments


def _catalogue(
    courses: pd.DataFrame, classes: pd.DataFrame
) -> dict[tuple[str, str], list[list[str]]]:
    """(school, grade) -> that grade's courses at that school, each as the list of its sections."""
    sections = classes.groupby("courseSourcedId", sort=True)["sourcedId"].agg(list).to_dict()
    catalogue: dict[tuple[str, str], list[list[str]]] = {}
    rows = zip(courses["sourcedId"], courses["orgSourcedId"], courses["grades"])
    for course, school, grade in rows:
        if course in sections:
            catalogue.setdefault((school, grade), []).append(sections[course])
    return catalogue


# --- deliveries -------------------------------------------------------------------------------


def write_delivery(roster: DistrictRoster, out_dir: Path) -> list[Path]:
    """Write `roster` as a OneRoster 1.1 bulk delivery into `out_dir`; returns the paths written.

    Every file is written under a temporary name and renamed into place, the manifest last, so a
    watcher that waits for `manifest.csv` never reads a half-written delivery. A manifest already
    in `out_dir` is removed first for the same reason.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / MANIFEST_FILE
    manifest.unlink(missing_ok=True)
    written = []
    for entity in ENTITIES:
        spec = SPECS[entity]
        with _replacing(out_dir / spec.file_name) as stream:
            roster.tables[entity].to_csv(
                stream, columns=list(spec.columns), index=False, lineterminator="\n"
            )
        written.append(out_dir / spec.file_name)
    with _replacing(manifest) as stream:
        csv.writer(stream, lineterminator="\n").writerows(_manifest_rows())
    return [*written, manifest]


def _manifest_rows() -> list[tuple[str, str]]:
    """manifest.csv: every OneRoster 1.1 data file, `bulk` for ours and `absent` for the rest."""
    modes = {entity: "bulk" for entity in ENTITIES} | {name: "absent" for name in UNSYNCED_FILES}
    return [
        ("propertyName", "value"),
        ("manifest.version", "1.0"),
        ("oneroster.version", "1.1"),
        *((f"file.{name}", modes[name]) for name in sorted(modes, key=str.lower)),
        ("source.systemName", SOURCE_SYSTEM_NAME),
    ]


@contextmanager
def _replacing(path: Path) -> Iterator[TextIO]:
    """A UTF-8 text stream to a hidden temporary file that replaces `path` once fully written."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        with temporary.open("w", encoding="utf-8", newline="") as stream:
            yield stream
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    os.replace(temporary, path)
