"""Referential and semantic rules (REFERENCE §8), the messy-input catalogue cases they answer (§14), and
delta references resolved against what the district delivered before (§3, R25).

Each test starts from the valid package of test_oneroster_reader.py and breaks one thing inline.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from rostersync_assets.oneroster.diagnostics import RULES, Diagnostic
from rostersync_assets.oneroster.reader import read_package
from rostersync_assets.oneroster.rules import SEMANTIC_RULES
from rostersync_assets.oneroster.validate import ValidationReport, check_of, validate_package
from rostersync_assets_tests.test_oneroster_reader import VALID_ROWS, edited_rows, package_files, table_bytes

Located = tuple[str, str, str | None, int | None, str | None, str | None]
CHANGED_AT = "2024-02-01T08:00:00.000Z"


def validate(
    modes: Mapping[str, str] | None = None,
    previous: Mapping[str, pd.DataFrame] | None = None,
    **rows: list[dict[str, str]],
) -> ValidationReport:
    """Validate the valid package with some files' rows replaced."""
    files = {entity: table_bytes(entity, entity_rows) for entity, entity_rows in rows.items()}
    return validate_package(read_package(package_files(modes, **files)), previous=previous)


def found(report: ValidationReport, entity: str, prefix: str = "semantic.") -> list[Located]:
    """The located findings of `entity`'s file whose rule starts with `prefix`."""
    file_name = f"{entity}.csv"
    return [
        (d.severity, d.rule, d.file, d.line, d.column, d.value)
        for d in report.diagnostics
        if d.file == file_name and d.rule.startswith(prefix)
    ]


def accepted_ids(report: ValidationReport, entity: str) -> list[str]:
    return report.tables[entity]["sourcedId"].tolist()


def added(entity: str, *rows: dict[str, str]) -> list[dict[str, str]]:
    """VALID_ROWS[entity] followed by `rows`."""
    return [dict(row) for row in VALID_ROWS[entity]] + list(rows)


def delta(*rows: dict[str, str], status: str = "active") -> list[dict[str, str]]:
    return [{**row, "status": status, "dateLastModified": CHANGED_AT} for row in rows]


TEACHER_2 = {**VALID_ROWS["users"][0], "sourcedId": "u4", "username": "tom.teach"}
SCHOOL_2 = {**VALID_ROWS["orgs"][1], "sourcedId": "s2", "name": "Grand Bend Middle"}


def test_semantic_rules_are_documented_and_reported_under_references() -> None:
    assert set(SEMANTIC_RULES) <= set(RULES)
    for rule in SEMANTIC_RULES:
        diagnostic = Diagnostic.create("warning", rule, "test")
        expected = "unique_sourced_ids" if rule.startswith("unique.") else "references"
        assert check_of(diagnostic) == expected


def test_the_valid_package_breaks_no_semantic_rule() -> None:
    report = validate()

    assert [d for d in report.diagnostics if d.rule in SEMANTIC_RULES] == []


# --- orgs and academic sessions (R2, R3) -----------------------------------------------------------


def test_org_parent_cycle_is_a_warning_on_every_org_of_the_cycle() -> None:
    report = validate(orgs=edited_rows("orgs", 0, parentSourcedId="s1"))

    assert found(report, "orgs") == [
        ("warning", "semantic.org_cycle", "orgs.csv", 2, "parentSourcedId", "s1"),
        ("warning", "semantic.org_cycle", "orgs.csv", 3, "parentSourcedId", "d1"),
    ]
    assert len(report.tables["orgs"]) == 2


def test_an_org_that_is_its_own_parent_is_a_cycle() -> None:
    report = validate(orgs=edited_rows("orgs", 0, parentSourcedId="d1"))

    assert found(report, "orgs") == [("warning", "semantic.org_cycle", "orgs.csv", 2, "parentSourcedId", "d1")]


def test_session_parent_cycle_is_a_warning() -> None:
    rows = edited_rows("academicSessions", 1, parentSourcedId="t2")
    rows[2]["parentSourcedId"] = "t1"

    report = validate(academicSessions=rows)

    cycles = [finding for finding in found(report, "academicSessions") if finding[1] == "semantic.session_cycle"]
    assert cycles == [
        ("warning", "semantic.session_cycle", "academicSessions.csv", 3, "parentSourcedId", "t2"),
        ("warning", "semantic.session_cycle", "academicSessions.csv", 4, "parentSourcedId", "t1"),
    ]


def test_session_parent_of_a_smaller_type_is_a_warning() -> None:
    grading_period = {"sourcedId": "g1", "title": "Q1", "type": "gradingPeriod", "startDate": "2023-08-21",
                      "endDate": "2023-10-20", "parentSourcedId": "t1", "schoolYear": "2024"}
    under_a_period = {**grading_period, "sourcedId": "t3", "type": "term", "parentSourcedId": "g1"}

    report = validate(academicSessions=added("academicSessions", grading_period, under_a_period))

    assert found(report, "academicSessions") == [
        ("warning", "semantic.session_parent_type", "academicSessions.csv", 6, "parentSourcedId", "g1")
    ]


def test_session_outside_its_parent_is_a_warning() -> None:
    report = validate(academicSessions=edited_rows("academicSessions", 1, startDate="2023-08-01"))

    assert found(report, "academicSessions") == [
        ("warning", "semantic.session_outside_parent", "academicSessions.csv", 3, "startDate", "2023-08-01")
    ]


def test_session_ending_after_its_parent_is_a_warning() -> None:
    report = validate(academicSessions=edited_rows("academicSessions", 2, endDate="2024-06-30"))

    assert found(report, "academicSessions") == [
        ("warning", "semantic.session_outside_parent", "academicSessions.csv", 4, "endDate", "2024-06-30")
    ]


def test_session_starting_after_it_ends_is_a_warning() -> None:
    report = validate(academicSessions=edited_rows("academicSessions", 2, startDate="2024-06-07", endDate="2024-06-06"))

    assert found(report, "academicSessions") == [
        ("warning", "semantic.date_order", "academicSessions.csv", 4, "endDate", "2024-06-06")
    ]


# --- courses and classes (R5, R7, R24) -------------------------------------------------------------


def test_course_school_year_of_another_session_type_is_a_warning() -> None:
    report = validate(courses=edited_rows("courses", 0, schoolYearSourcedId="t1"))

    assert found(report, "courses") == [
        ("warning", "semantic.course_school_year_type", "courses.csv", 2, "schoolYearSourcedId", "t1")
    ]
    assert accepted_ids(report, "courses") == ["03100500"]


def test_class_school_that_is_not_a_school_rejects_the_class_and_its_enrollments() -> None:
    report = validate(classes=edited_rows("classes", 0, schoolSourcedId="d1"))

    assert found(report, "classes") == [
        ("error", "semantic.class_school_type", "classes.csv", 2, "schoolSourcedId", "d1")
    ]
    assert report.tables["classes"].empty
    assert [rule for _, rule, *_ in found(report, "enrollments", "reference.")] == ["reference.rejected"] * 2
    assert report.rejected_rows("classes") == 1


def test_subjects_and_subject_codes_of_different_lengths_are_a_warning() -> None:
    report = validate(
        courses=edited_rows("courses", 0, subjects="Mathematics,Algebra", subjectCodes="02052"),
        classes=edited_rows("classes", 0, subjects="Mathematics", subjectCodes="02052,02053"),
    )

    assert found(report, "courses") == [
        ("warning", "semantic.subject_codes_count", "courses.csv", 2, "subjectCodes", "02052")
    ]
    assert found(report, "classes") == [
        ("warning", "semantic.subject_codes_count", "classes.csv", 2, "subjectCodes", "02052,02053")
    ]


# --- users (R13) -----------------------------------------------------------------------------------


def test_a_teacher_as_agent_is_a_warning() -> None:
    rows = edited_rows("users", 1, agentSourcedIds="u3,u1")

    report = validate(users=rows)

    assert found(report, "users") == [
        ("warning", "semantic.agent_is_teacher", "users.csv", 3, "agentSourcedIds", "u1")
    ]
    assert len(report.tables["users"]) == 3


def test_an_agent_who_does_not_list_the_user_back_is_a_warning() -> None:
    report = validate(users=edited_rows("users", 2, agentSourcedIds=""))

    assert found(report, "users") == [
        ("warning", "semantic.agent_not_reciprocal", "users.csv", 3, "agentSourcedIds", "u3")
    ]


# --- enrollments (R11, R22, R23, M25) --------------------------------------------------------------


def test_enrollment_school_that_is_not_a_school_rejects_the_enrollment() -> None:
    report = validate(enrollments=edited_rows("enrollments", 1, schoolSourcedId="d1"))

    assert found(report, "enrollments") == [
        ("error", "semantic.enrollment_school_type", "enrollments.csv", 3, "schoolSourcedId", "d1"),
        ("warning", "semantic.enrollment_school_mismatch", "enrollments.csv", 3, "schoolSourcedId", "d1"),
    ]
    assert accepted_ids(report, "enrollments") == ["e1"]


def test_enrollment_school_other_than_the_class_school_is_a_warning() -> None:
    report = validate(orgs=added("orgs", SCHOOL_2), enrollments=edited_rows("enrollments", 1, schoolSourcedId="s2"))

    assert found(report, "enrollments") == [
        ("warning", "semantic.enrollment_school_mismatch", "enrollments.csv", 3, "schoolSourcedId", "s2")
    ]
    assert accepted_ids(report, "enrollments") == ["e1", "e2"]


def test_enrollment_beginning_before_its_class_terms_is_a_warning() -> None:
    report = validate(enrollments=edited_rows("enrollments", 1, beginDate="2023-08-01"))

    assert found(report, "enrollments") == [
        ("warning", "semantic.enrollment_outside_terms", "enrollments.csv", 3, "beginDate", "2023-08-01")
    ]


def test_enrollment_ending_after_its_class_terms_is_a_warning() -> None:
    report = validate(enrollments=edited_rows("enrollments", 1, endDate="2024-06-08"))

    assert found(report, "enrollments") == [
        ("warning", "semantic.enrollment_outside_terms", "enrollments.csv", 3, "endDate", "2024-06-08")
    ]


def test_enrollment_beginning_after_it_ends_is_a_warning() -> None:
    report = validate(enrollments=edited_rows("enrollments", 1, beginDate="2024-01-10", endDate="2024-01-09"))

    assert found(report, "enrollments") == [
        ("warning", "semantic.date_order", "enrollments.csv", 3, "endDate", "2024-01-09")
    ]


def test_two_primary_teachers_of_one_class_at_the_same_time_are_a_warning() -> None:
    second = {**VALID_ROWS["enrollments"][0], "sourcedId": "e3", "userSourcedId": "u4"}

    report = validate(users=added("users", TEACHER_2), enrollments=added("enrollments", second))

    assert found(report, "enrollments") == [
        ("warning", "semantic.primary_teacher_count", "enrollments.csv", 2, "primary", "true"),
        ("warning", "semantic.primary_teacher_count", "enrollments.csv", 4, "primary", "true"),
    ]
    assert accepted_ids(report, "enrollments") == ["e1", "e2", "e3"]


def test_primary_teachers_one_after_the_other_are_fine() -> None:
    first = edited_rows("enrollments", 0, endDate="2024-01-12")
    second = {**first[0], "sourcedId": "e3", "userSourcedId": "u4", "beginDate": "2024-01-13", "endDate": ""}

    report = validate(users=added("users", TEACHER_2), enrollments=[*first, second])

    assert found(report, "enrollments") == []


def test_primary_on_a_student_enrollment_is_a_warning() -> None:
    report = validate(enrollments=edited_rows("enrollments", 1, primary="true"))

    assert found(report, "enrollments") == [
        ("warning", "semantic.primary_not_teacher", "enrollments.csv", 3, "primary", "true")
    ]


# --- the messy-input catalogue (REFERENCE §14) -----------------------------------------------------


def test_m23_bulk_dangling_required_reference_is_an_error_and_optional_parent_a_warning() -> None:
    report = validate(
        orgs=edited_rows("orgs", 0, parentSourcedId="state-1"),
        enrollments=edited_rows("enrollments", 1, classSourcedId="k9"),
    )

    assert found(report, "orgs", "reference.") == [
        ("warning", "reference.missing", "orgs.csv", 2, "parentSourcedId", "state-1")
    ]
    assert found(report, "enrollments", "reference.") == [
        ("error", "reference.missing", "enrollments.csv", 3, "classSourcedId", "k9")
    ]
    assert accepted_ids(report, "enrollments") == ["e1"]


def test_m23_delta_dangling_reference_is_parked() -> None:
    enrollment = {**VALID_ROWS["enrollments"][1], "sourcedId": "e9", "userSourcedId": "u9"}

    report = validate(modes={"enrollments": "delta"}, previous={}, enrollments=delta(enrollment))

    assert found(report, "enrollments", "reference.") == [
        ("warning", "reference.parked", "enrollments.csv", 2, "userSourcedId", "u9")
    ]
    assert report.tables["enrollments"].empty
    assert report.rejected_rows("enrollments") == 0


def test_m24_class_at_a_department_is_rejected_but_role_mismatch_is_allowed() -> None:
    department = {"sourcedId": "dep1", "name": "Maths Department", "type": "department", "parentSourcedId": "s1"}
    teacher_as_student = edited_rows("enrollments", 0, role="student", primary="false")

    report = validate(
        orgs=added("orgs", department),
        classes=added("classes", {**VALID_ROWS["classes"][0], "sourcedId": "k2", "schoolSourcedId": "dep1"}),
        enrollments=teacher_as_student,
    )

    assert found(report, "classes") == [
        ("error", "semantic.class_school_type", "classes.csv", 3, "schoolSourcedId", "dep1")
    ]
    assert found(report, "enrollments") == []
    assert accepted_ids(report, "enrollments") == ["e1", "e2"]


def test_m25_exact_duplicate_enrollment_is_dropped_with_a_warning() -> None:
    copy = {**VALID_ROWS["enrollments"][1], "sourcedId": "e3"}

    report = validate(enrollments=added("enrollments", copy))

    assert found(report, "enrollments") == [
        ("warning", "semantic.enrollment_duplicate", "enrollments.csv", 4, "sourcedId", "e3")
    ]
    assert accepted_ids(report, "enrollments") == ["e1", "e2"]
    assert report.rejected_rows("enrollments") == 0


def test_m25_conflicting_duplicate_enrollments_are_all_rejected() -> None:
    conflicting = {**VALID_ROWS["enrollments"][1], "sourcedId": "e3", "role": "teacher", "primary": "false"}

    report = validate(enrollments=added("enrollments", conflicting))

    assert found(report, "enrollments") == [
        ("error", "semantic.enrollment_conflict", "enrollments.csv", 3, "userSourcedId", "u2"),
        ("error", "semantic.enrollment_conflict", "enrollments.csv", 4, "userSourcedId", "u2"),
    ]
    assert accepted_ids(report, "enrollments") == ["e1"]


def test_m25_re_enrollment_after_a_gap_is_not_a_conflict() -> None:
    rows = edited_rows("enrollments", 1, endDate="2023-12-01")
    rows.append({**rows[1], "sourcedId": "e3", "beginDate": "2024-01-15", "endDate": ""})

    report = validate(enrollments=rows)

    assert found(report, "enrollments") == []
    assert accepted_ids(report, "enrollments") == ["e1", "e2", "e3"]


def test_m25_exact_duplicate_row_is_dropped_but_a_differing_copy_rejects_every_copy() -> None:
    exact = validate(users=added("users", VALID_ROWS["users"][2]))
    differing = validate(users=added("users", {**VALID_ROWS["users"][2], "username": "pat.p"}))

    assert found(exact, "users", "unique.") == [
        ("warning", "unique.duplicate_row", "users.csv", 5, "sourcedId", "u3")
    ]
    assert accepted_ids(exact, "users") == ["u1", "u2", "u3"]
    assert found(differing, "users", "unique.") == [
        ("error", "unique.sourced_id", "users.csv", 4, "sourcedId", "u3"),
        ("error", "unique.sourced_id", "users.csv", 5, "sourcedId", "u3"),
    ]
    assert accepted_ids(differing, "users") == ["u1", "u2"]


def test_m26_one_person_with_a_user_record_per_school_is_not_a_duplicate() -> None:
    same_person = {**VALID_ROWS["users"][0], "sourcedId": "u1-s2", "orgSourcedIds": "s2"}

    report = validate(orgs=added("orgs", SCHOOL_2), users=added("users", same_person))

    assert found(report, "users", "unique.") == found(report, "users") == []
    assert accepted_ids(report, "users") == ["u1", "u2", "u3", "u1-s2"]


def test_m33_end_dates_are_inclusive() -> None:
    last_day = edited_rows("enrollments", 1, beginDate="2024-06-07", endDate="2024-06-07")
    same_end_as_parent = edited_rows("academicSessions", 2, endDate="2024-06-07")

    report = validate(enrollments=last_day, academicSessions=same_end_as_parent)

    assert found(report, "enrollments") == found(report, "academicSessions") == []


def test_m36_semester_section_with_full_year_dates_and_school_year_under_a_term_are_warnings() -> None:
    fall_only = edited_rows("classes", 0, termSourcedIds="t1")
    year_under_term = {"sourcedId": "y2", "title": "Odd", "type": "schoolYear", "startDate": "2023-09-01",
                       "endDate": "2023-12-01", "parentSourcedId": "t1", "schoolYear": "2024"}

    report = validate(classes=fall_only, academicSessions=added("academicSessions", year_under_term))

    assert found(report, "enrollments") == [
        ("warning", "semantic.enrollment_outside_terms", "enrollments.csv", 3, "endDate", "2024-06-07")
    ]
    assert found(report, "academicSessions") == [
        ("warning", "semantic.session_parent_type", "academicSessions.csv", 5, "parentSourcedId", "t1")
    ]
    assert accepted_ids(report, "enrollments") == ["e1", "e2"]


# --- delta references against earlier deliveries (R25) ---------------------------------------------


def _previous(**tables: list[dict[str, str]]) -> dict[str, pd.DataFrame]:
    return {entity: pd.DataFrame(rows, dtype="str") for entity, rows in tables.items()}


def test_delta_references_resolve_against_earlier_deliveries_and_the_package() -> None:
    earlier = _previous(
        users=[{"sourcedId": "u7"}, {"sourcedId": "u2"}], classes=[{"sourcedId": "k7", "schoolSourcedId": "s1"}]
    )
    rows = delta(
        {"sourcedId": "e7", "classSourcedId": "k7", "schoolSourcedId": "s1", "userSourcedId": "u7", "role": "student"},
        {"sourcedId": "e8", "classSourcedId": "k1", "schoolSourcedId": "s1", "userSourcedId": "u2", "role": "student"},
        {"sourcedId": "e9", "classSourcedId": "k9", "schoolSourcedId": "s1", "userSourcedId": "u9", "role": "student"},
    )

    report = validate(
        modes={"classes": "delta", "enrollments": "delta", "users": "absent", "demographics": "absent"},
        previous=earlier,
        classes=delta(VALID_ROWS["classes"][0]),
        enrollments=rows,
    )

    assert found(report, "enrollments", "reference.") == [
        ("warning", "reference.parked", "enrollments.csv", 4, "classSourcedId", "k9"),
        ("warning", "reference.parked", "enrollments.csv", 4, "userSourcedId", "u9"),
    ]
    assert accepted_ids(report, "enrollments") == ["e7", "e8"]
    assert report.parked("enrollments").to_dict("records") == [
        {"sourcedId": "e9", "_line": 4, "column": "classSourcedId", "value": "k9"},
        {"sourcedId": "e9", "_line": 4, "column": "userSourcedId", "value": "u9"},
    ]
    assert report.parked("users").empty
    assert report.accepted


def test_a_delta_row_being_deleted_is_never_parked() -> None:
    gone = {"sourcedId": "e9", "classSourcedId": "k9", "schoolSourcedId": "s1", "userSourcedId": "u9",
            "role": "student"}

    report = validate(modes={"enrollments": "delta"}, previous={}, enrollments=delta(gone, status="tobedeleted"))

    assert found(report, "enrollments", "reference.") == []
    assert accepted_ids(report, "enrollments") == ["e9"]


def test_a_bulk_target_replaces_what_was_delivered_before() -> None:
    enrollment = {**VALID_ROWS["enrollments"][1], "sourcedId": "e7", "userSourcedId": "u7"}

    report = validate(
        modes={"enrollments": "delta"},
        previous=_previous(users=[{"sourcedId": "u7"}]),
        enrollments=delta(enrollment),
    )

    assert found(report, "enrollments", "reference.") == [
        ("warning", "reference.parked", "enrollments.csv", 2, "userSourcedId", "u7")
    ]


def test_a_parked_parent_parks_its_delta_dependants() -> None:
    new_class = {**VALID_ROWS["classes"][0], "sourcedId": "k8", "courseSourcedId": "c8"}
    enrollment = {**VALID_ROWS["enrollments"][1], "sourcedId": "e8", "classSourcedId": "k8"}

    report = validate(
        modes={"courses": "delta", "classes": "delta", "enrollments": "delta"},
        previous=_previous(courses=[{"sourcedId": "03100500"}]),
        courses=delta(VALID_ROWS["courses"][0]),
        classes=delta(new_class),
        enrollments=delta(enrollment),
    )

    assert found(report, "classes", "reference.") == [
        ("warning", "reference.parked", "classes.csv", 2, "courseSourcedId", "c8")
    ]
    assert found(report, "enrollments", "reference.") == [
        ("warning", "reference.parked", "enrollments.csv", 2, "classSourcedId", "k8")
    ]


def test_delta_semantic_rules_look_up_earlier_deliveries() -> None:
    moved = {**VALID_ROWS["classes"][0], "sourcedId": "k7", "schoolSourcedId": "o7"}

    report = validate(
        modes={"orgs": "absent", "classes": "delta", "enrollments": "absent", "users": "absent",
               "demographics": "absent", "courses": "absent"},
        previous=_previous(orgs=[{"sourcedId": "o7", "type": "district"}], courses=[{"sourcedId": "03100500"}]),
        classes=delta(moved),
    )

    assert found(report, "classes") == [
        ("error", "semantic.class_school_type", "classes.csv", 2, "schoolSourcedId", "o7")
    ]
    assert report.tables["classes"].empty


def test_without_previous_delta_references_are_not_checked() -> None:
    enrollment = {**VALID_ROWS["enrollments"][1], "sourcedId": "e9", "userSourcedId": "u9"}

    report = validate(modes={"enrollments": "delta"}, enrollments=delta(enrollment))

    assert found(report, "enrollments", "reference.") == []
    assert accepted_ids(report, "enrollments") == ["e9"]
    assert report.parked("enrollments").empty
