"""Referential and semantic rules that look across rows and files (REFERENCE §8 R2-R24, §14 M24/M25/M33/M36).

A file can be schema-valid and still describe an impossible district: a class taught at a district
office, a term inside itself, two primary teachers of one class. The rules here find that, each under a
stable id in `SEMANTIC_RULES`, at the severity REFERENCE §8 recommends: an error only where the LMS
would otherwise receive a wrong record (it rejects the row), a warning where real feeds legitimately
differ from the spec.

Rules are pure and vectorised (isin, map, merge on the few repeated rows): they run over a million
enrollments in a fraction of a second. They see the package's rows plus what is `Known` of each
entity: the rows of this package that passed (and, for files that are not bulk, what earlier
deliveries stored), so a delta class is checked against its school even when orgs.csv is absent.

Conventions, decided once here:
- Rows with status `tobedeleted` are never judged: they are on their way out.
- Dates are compared as `YYYY-MM-DD` strings (schema-valid ISO dates sort like the days they name).
- endDate is the last day included, for sessions and enrollments alike (M33: inclusive is what real
  producers mean, and it never drops a student on their last day).
- A value that cannot be looked up (unknown parent, column missing from earlier deliveries) is not
  judged: missing references are validate.py's business.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import pandas as pd

from rostersync_assets.oneroster.diagnostics import Diagnostic, Severity
from rostersync_assets.oneroster.spec import FILE_COLUMN, LINE_COLUMN
from rostersync_assets.oneroster.frames import all_distinct, is_in, split_items

# Rule id -> plain-language explanation; merged into diagnostics.RULES by validate.py.
SEMANTIC_RULES: dict[str, str] = {
    "unique.duplicate_row": (
        "The row repeats an earlier row exactly (same sourcedId, same values); the copy was dropped (M25)."
    ),
    "reference.parked": (
        "A delta row references a record that is neither in this package nor in an earlier delivery; the row "
        "is held back (parked) until a later delivery brings the record (R25)."
    ),
    "semantic.org_cycle": "The org's parentSourcedId chain leads back to the org itself (R2).",
    "semantic.session_cycle": "The academic session's parentSourcedId chain leads back to the session itself (R3).",
    "semantic.session_parent_type": (
        "The parent session is not of a larger type: a grading period belongs to a term or semester, a term or "
        "semester to a school year, and a school year has no parent (R3, M36)."
    ),
    "semantic.session_outside_parent": "The session starts before or ends after its parent session (R3, M36).",
    "semantic.date_order": "The start date is after the end date, so the period contains no day.",
    "semantic.course_school_year_type": (
        "The course's schoolYearSourcedId names an academic session that is not of type schoolYear (R5)."
    ),
    "semantic.class_school_type": (
        "The class's schoolSourcedId names an org that is not of type school (a district or department); the "
        "class is rejected (R7, M24)."
    ),
    "semantic.enrollment_school_type": (
        "The enrollment's schoolSourcedId names an org that is not of type school; the enrollment is rejected (R11)."
    ),
    "semantic.enrollment_school_mismatch": "The enrollment's school is not the school of its class (R11).",
    "semantic.enrollment_outside_terms": (
        "The enrollment begins before or ends after the academic sessions of its class (R22, M36; endDate inclusive)."
    ),
    "semantic.enrollment_duplicate": (
        "The enrollment repeats an earlier enrollment of the same user in the same class with the same values; "
        "the copy was dropped (M25)."
    ),
    "semantic.enrollment_conflict": (
        "The same user is enrolled in the same class by several rows that differ and overlap in time; every "
        "copy is rejected because rostersync cannot tell which is right (M25)."
    ),
    "semantic.primary_teacher_count": (
        "The class has more than one primary teacher for overlapping dates; at most one is allowed (R23)."
    ),
    "semantic.primary_not_teacher": "primary is true on an enrollment whose role is not teacher; it means nothing there (R23).",
    "semantic.agent_is_teacher": "An agentSourcedIds entry names a teacher; teachers are never agents (R13).",
    "semantic.agent_not_reciprocal": (
        "An agentSourcedIds entry names a user who does not list this user back as an agent (R13)."
    ),
    "semantic.subject_codes_count": "subjects and subjectCodes are both given but list a different number of items (R24).",
}

# Rules that drop the row they name without rejecting it: the record itself is kept (first copy) or
# may become valid with a later delivery (parked).
EXCLUDING_WARNINGS: frozenset[str] = frozenset(
    {"unique.duplicate_row", "semantic.enrollment_duplicate", "reference.parked"}
)

# Entity -> its rows known to exist: this package's accepted rows, plus earlier deliveries' for non-bulk files.
Known = Mapping[str, pd.DataFrame]
_Result = TypeVar("_Result")

_OPEN_END = "9999-12-31"
_EXTENSION = "ext:"
# A session's parent must have a higher rank (REFERENCE §6.1: gradingPeriod -> term/semester -> schoolYear).
_SESSION_RANK = {"gradingPeriod": 0, "term": 1, "semester": 1, "schoolYear": 2}
_ENROLLMENT_KEY = ["userSourcedId", "classSourcedId"]
# Columns that do not make two enrollments different records of the same membership.
_BOOKKEEPING = frozenset({"sourcedId", "status", "dateLastModified", LINE_COLUMN})


# --- shared with validate.py ----------------------------------------------------------------------


def row_diagnostics(
    rows: pd.DataFrame, severity: Severity, rule: str, message: str, file_name: str, column: str
) -> list[Diagnostic]:
    """One diagnostic per row of a frame with `line` and `value` columns, in line order.

    The diagnostic names `file_name`, or the row's own file where the frame has a `file` column
    (rows of a table built from several files, see `located_rows`).
    """
    rows = rows.sort_values("line", kind="stable")
    files = rows["file"] if "file" in rows.columns else [file_name] * len(rows)
    return [
        Diagnostic.create(severity, rule, message, file=file, line=int(line), column=column, value=value)
        for file, line, value in zip(files, rows["line"], rows["value"])
    ]


def located_rows(table: pd.DataFrame, values: pd.Series | np.ndarray) -> pd.DataFrame:
    """(line, value) per row of `table`, plus the row's file when the table carries `_file`."""
    located = {"line": table[LINE_COLUMN].to_numpy(), "value": np.asarray(values, dtype=object)}
    if FILE_COLUMN in table.columns:
        located["file"] = table[FILE_COLUMN].to_numpy()
    return pd.DataFrame(located)


def listed_ids(table: pd.DataFrame, column: str, is_list: bool) -> pd.DataFrame:
    """One row (line, sourcedId, value, and file for tables with `_file`) per id a column names; list
    cells are split on commas and trimmed.

    Works by position (no label lookups) and keeps strings in Arrow: it runs on every reference
    column of every file, 6 M+ enrollment rows a night for a large district.
    """
    values = table[column]
    if is_list:
        # Split only the filled cells: most agent lists are blank, and splitting is the costly part.
        filled = np.flatnonzero((values != "").to_numpy())
        values, within = split_items(values.iloc[filled])
        positions = filled[within]
    else:
        positions = np.arange(len(values))
        values = values.reset_index(drop=True)
    values = values.str.strip()
    given = (values != "").to_numpy()
    if not is_list and given.all():
        # Every row names one id (an 8 M-row reference column, typically): no copies needed.
        listed = {"line": table[LINE_COLUMN].to_numpy(), "sourcedId": table["sourcedId"].array, "value": values.array}
        if FILE_COLUMN in table.columns:
            listed["file"] = table[FILE_COLUMN].array
        return pd.DataFrame(listed)
    at = positions[given]
    listed = {
        "line": table[LINE_COLUMN].to_numpy()[at],
        "sourcedId": table["sourcedId"].array.take(at),
        "value": values.array[given],
    }
    if FILE_COLUMN in table.columns:
        listed["file"] = table[FILE_COLUMN].array.take(at)
    return pd.DataFrame(listed)


def live(table: pd.DataFrame) -> pd.DataFrame:
    """The rows that are not being deleted: only they must make sense together."""
    deleted = table["status"] == "tobedeleted"
    return table[~deleted] if deleted.any() else table


# --- the rules ------------------------------------------------------------------------------------

# A rule's finder returns the offending rows as a frame of `line` and `value` (the cell it names), and
# `file` for tables with `_file`.
Finder = Callable[[pd.DataFrame, Known], pd.DataFrame]


@dataclass(frozen=True)
class Rule:
    """One semantic rule as applied to one column of one file."""

    rule: str
    severity: Severity
    entity: str
    column: str
    message: str
    find: Finder


def semantic_findings(entity: str, table: pd.DataFrame, file_name: str, known: Known) -> list[Diagnostic]:
    """Every semantic rule of `entity` over the table's live rows, in line order."""
    rows = live(table)
    found: list[Diagnostic] = []
    for rule in _RULES:
        if rule.entity == entity:
            flagged = rule.find(rows, known)
            found += row_diagnostics(flagged, rule.severity, rule.rule, rule.message, file_name, rule.column)
    return sorted(found, key=lambda diagnostic: diagnostic.line or 0)


def _flag(table: pd.DataFrame, mask: pd.Series | np.ndarray, column: str) -> pd.DataFrame:
    """The rows of `table` where `mask` holds, as (line, value of `column`[, file])."""
    mask = np.asarray(mask, dtype=bool)
    # Filter before converting: a million-row column converted to Python objects costs a tenth of a second
    # (and a boolean take is not free even when nothing is flagged, the usual case).
    needed = table[[LINE_COLUMN, column, *([FILE_COLUMN] if FILE_COLUMN in table.columns else [])]]
    flagged = needed[mask] if mask.any() else needed.iloc[:0]
    return located_rows(flagged, flagged[column].to_numpy())


def _lookup(known: Known, entity: str, column: str) -> pd.Series:
    """sourcedId -> `column` for the known rows of `entity` that have a value (empty when nothing is known)."""
    rows = known.get(entity)
    if rows is None or column not in rows.columns:
        return pd.Series(dtype="str")
    values = rows[column].where(rows[column] != "")
    values.index = pd.Index(rows["sourcedId"])
    values = values[values.notna() & ~values.index.duplicated()]
    return values.astype("str")


def _looked_up(ids: pd.Series, lookup: pd.Series) -> pd.Series:
    """`lookup[id]` per id as `str`, missing where unknown (so comparisons with it are simply False).

    Factorising first hashes each distinct id once: a million enrollments name only thousands of classes.
    """
    codes, distinct = pd.factorize(ids)
    positions = lookup.index.get_indexer(distinct)[codes]
    positions[codes < 0] = -1
    values = lookup.astype("str").array.take(positions, allow_fill=True)
    return pd.Series(values, index=ids.index)


def _ids_not_of_type(known: Known, entity: str, expected: str) -> pd.Index:
    """Known ids of `entity` whose type is another spec type (`ext:` extension types are accepted)."""
    types = _lookup(known, entity, "type")
    return types.index[(types != expected) & ~types.str.startswith(_EXTENSION)]


def _wrong_type(column: str, entity: str, expected: str) -> Finder:
    """Rows whose `column` names a known `entity` record of another type than `expected` (R5, R7, R11)."""

    def find(table: pd.DataFrame, known: Known) -> pd.DataFrame:
        return _flag(table, is_in(table[column], _ids_not_of_type(known, entity, expected)), column)

    return find


def _cycle_members(ids: pd.Series, parents: pd.Series) -> pd.Index:
    """The ids on a parent cycle (self-parent included).

    Each record has at most one parent, so peeling records whose parent is outside the remaining set,
    then records no remaining record points to, leaves exactly the cycles. Loops run once per tree
    level, never once per row.
    """
    ids, parents = ids.to_numpy(dtype=object), parents.fillna("").to_numpy(dtype=object)
    remaining = np.ones(len(ids), dtype=bool)
    for removable in (
        lambda: ~pd.Index(parents).isin(ids[remaining]),
        lambda: ~pd.Index(ids).isin(parents[remaining]),
    ):
        while (peeled := remaining & removable()).any():
            remaining &= ~peeled
    return pd.Index(ids[remaining])


def _parent_cycle(entity: str) -> Finder:
    """Rows on a cycle of `entity`'s parentSourcedId tree, judged over everything known (R2, R3)."""

    def find(table: pd.DataFrame, known: Known) -> pd.DataFrame:
        tree = known.get(entity, table)
        members = _cycle_members(tree["sourcedId"], tree["parentSourcedId"])
        return _flag(table, is_in(table["sourcedId"], members), "parentSourcedId")

    return find


def _session_parent_type(table: pd.DataFrame, known: Known) -> pd.DataFrame:
    """Sessions whose parent is not of a higher rank (a school year under a term: M36)."""
    parent_type = _looked_up(table["parentSourcedId"], _lookup(known, "academicSessions", "type"))
    child_rank = table["type"].map(_SESSION_RANK)
    parent_rank = parent_type.map(_SESSION_RANK)
    return _flag(table, parent_rank <= child_rank, "parentSourcedId")


def _outside_parent(column: str) -> Finder:
    """Sessions starting before (startDate) or ending after (endDate) their parent session."""

    def find(table: pd.DataFrame, known: Known) -> pd.DataFrame:
        parent = _looked_up(table["parentSourcedId"], _lookup(known, "academicSessions", column))
        outside = table[column] < parent if column == "startDate" else table[column] > parent
        return _flag(table, outside, column)

    return find


def _date_order(start: str) -> Finder:
    """Rows whose start date is after their endDate (blank dates are open, never out of order)."""

    def find(table: pd.DataFrame, known: Known) -> pd.DataFrame:
        given = (table[start] != "") & (table["endDate"] != "")
        return _flag(table, given & (table[start] > table["endDate"]), "endDate")

    return find


def _enrollment_school_mismatch(table: pd.DataFrame, known: Known) -> pd.DataFrame:
    class_school = _looked_up(table["classSourcedId"], _lookup(known, "classes", "schoolSourcedId"))
    return _flag(table, class_school.notna() & (class_school != table["schoolSourcedId"]), "schoolSourcedId")


def _class_spans(known: Known) -> pd.DataFrame:
    """Per known class (index), the first day of its earliest session and the last day of its latest."""
    classes = known.get("classes")
    if classes is None:
        return pd.DataFrame({"start": pd.Series(dtype="str"), "end": pd.Series(dtype="str")})
    terms = listed_ids(classes, "termSourcedIds", is_list=True)
    spans = pd.DataFrame(
        {
            "sourcedId": terms["sourcedId"],
            "start": _looked_up(terms["value"], _lookup(known, "academicSessions", "startDate")),
            "end": _looked_up(terms["value"], _lookup(known, "academicSessions", "endDate")),
        }
    ).dropna()
    return spans.groupby("sourcedId").agg(start=("start", "min"), end=("end", "max"))


def _outside_terms(column: str) -> Finder:
    """Enrollments whose beginDate or endDate falls outside their class's sessions (R22, inclusive ends)."""

    def find(table: pd.DataFrame, known: Known) -> pd.DataFrame:
        dates = table[column]
        given = dates != ""
        if not given.any():
            return _flag(table, given, column)
        spans = _class_spans(known)
        start = _looked_up(table["classSourcedId"], spans["start"])
        end = _looked_up(table["classSourcedId"], spans["end"])
        return _flag(table, given & ((dates < start) | (dates > end)), column)

    return find


def _overlapping(rows: pd.DataFrame, keys: list[str]) -> np.ndarray:
    """Which rows share `keys` with another row whose beginDate..endDate (inclusive, blank = open) overlaps.

    A self-merge: only call it with the few rows already known to share their keys.
    """
    spans = rows[keys].assign(
        begin=rows["beginDate"].to_numpy(),
        end=rows["endDate"].where(rows["endDate"] != "", _OPEN_END).to_numpy(),
        row=np.arange(len(rows)),
    )
    pairs = spans.merge(spans, on=keys)
    hits = (pairs["row_x"] != pairs["row_y"]) & (pairs["begin_x"] <= pairs["end_y"]) & (pairs["begin_y"] <= pairs["end_x"])
    overlapping = np.zeros(len(rows), dtype=bool)
    overlapping[pairs.loc[hits, "row_x"].to_numpy()] = True
    return overlapping


def _per_table(compute: Callable[[pd.DataFrame], _Result]) -> Callable[[pd.DataFrame], _Result]:
    """`compute` remembered for the last table it was given (tables are never modified in place).

    Two enrollment rules need the same analysis of 8 M rows; the table is held weakly, so the memo never
    keeps it alive, and a new table (another call of `semantic_findings`) computes afresh.
    """
    last: list[tuple[weakref.ref[pd.DataFrame], _Result]] = []

    @functools.wraps(compute)
    def remembered(table: pd.DataFrame) -> _Result:
        if last and last[0][0]() is table:
            return last[0][1]
        result = compute(table)
        last[:] = [(weakref.ref(table), result)]
        return result

    return remembered


@_per_table
def _repeated_enrollments(table: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The rows sharing their (user, class) with another row, and which of them copy an earlier one exactly."""
    if all_distinct(table, _ENROLLMENT_KEY):
        return table.iloc[:0], np.zeros(0, dtype=bool)
    repeated = table[table.duplicated(_ENROLLMENT_KEY, keep=False)]
    content = [column for column in table.columns if column not in _BOOKKEEPING]
    return repeated, repeated.duplicated(content, keep="first").to_numpy()


def _enrollment_duplicate(table: pd.DataFrame, known: Known) -> pd.DataFrame:
    repeated, copies = _repeated_enrollments(table)
    return _flag(repeated, copies, "sourcedId")


def _enrollment_conflict(table: pd.DataFrame, known: Known) -> pd.DataFrame:
    repeated, copies = _repeated_enrollments(table)
    distinct = repeated[~copies]
    return _flag(distinct, _overlapping(distinct, _ENROLLMENT_KEY), "userSourcedId")


def _primary_teacher_count(table: pd.DataFrame, known: Known) -> pd.DataFrame:
    primaries = table[(table["role"] == "teacher") & (table["primary"] == "true")]
    shared = primaries[primaries.duplicated("classSourcedId", keep=False)]
    return _flag(shared, _overlapping(shared, ["classSourcedId"]), "primary")


def _primary_not_teacher(table: pd.DataFrame, known: Known) -> pd.DataFrame:
    return _flag(table, (table["primary"] == "true") & (table["role"] != "teacher"), "primary")


def _teacher_ids(known: Known) -> pd.Index:
    """Users known to teach (1.2 packages arrive with users.role derived from roles.csv)."""
    roles = _lookup(known, "users", "role")
    return roles.index[roles == "teacher"]


def _agents(table: pd.DataFrame) -> pd.DataFrame:
    return listed_ids(table, "agentSourcedIds", is_list=True)


def _agent_is_teacher(table: pd.DataFrame, known: Known) -> pd.DataFrame:
    agents = _agents(table)
    # Most districts list no agents: then no teacher lookup over every user is needed.
    return agents[is_in(agents["value"], _teacher_ids(known))] if len(agents) else agents


def _agent_not_reciprocal(table: pd.DataFrame, known: Known) -> pd.DataFrame:
    """Agent links the named user does not list back.

    Not judged: agents whose own agent list is unknown (earlier deliveries without the column), and
    teacher agents, which semantic.agent_is_teacher already reports.
    """
    agents = _agents(table)
    if agents.empty:
        return agents
    users = known.get("users", table)
    users = users[users["agentSourcedIds"].notna()]
    links = _agents(users)
    back = pd.Index(links["value"] + "\x1f" + links["sourcedId"])
    judged = is_in(agents["value"], users["sourcedId"]) & ~is_in(agents["value"], _teacher_ids(known))
    unanswered = judged & ~is_in(agents["sourcedId"] + "\x1f" + agents["value"], back)
    return agents[unanswered]


def _subject_codes_count(table: pd.DataFrame, known: Known) -> pd.DataFrame:
    given = (table["subjects"].str.strip() != "") & (table["subjectCodes"].str.strip() != "")
    differ = table["subjects"].str.count(",") != table["subjectCodes"].str.count(",")
    return _flag(table, given & differ, "subjectCodes")


_RULES: tuple[Rule, ...] = (
    Rule("semantic.org_cycle", "warning", "orgs", "parentSourcedId",
         "the parent chain leads back to this org", _parent_cycle("orgs")),
    Rule("semantic.session_cycle", "warning", "academicSessions", "parentSourcedId",
         "the parent chain leads back to this session", _parent_cycle("academicSessions")),
    Rule("semantic.session_parent_type", "warning", "academicSessions", "parentSourcedId",
         "the parent session's type is not larger than this session's", _session_parent_type),
    Rule("semantic.session_outside_parent", "warning", "academicSessions", "startDate",
         "the session starts before its parent session", _outside_parent("startDate")),
    Rule("semantic.session_outside_parent", "warning", "academicSessions", "endDate",
         "the session ends after its parent session", _outside_parent("endDate")),
    Rule("semantic.date_order", "warning", "academicSessions", "endDate",
         "endDate is before startDate", _date_order("startDate")),
    Rule("semantic.course_school_year_type", "warning", "courses", "schoolYearSourcedId",
         "the academic session is not of type schoolYear", _wrong_type("schoolYearSourcedId", "academicSessions", "schoolYear")),
    Rule("semantic.subject_codes_count", "warning", "courses", "subjectCodes",
         "subjectCodes does not list as many items as subjects", _subject_codes_count),
    Rule("semantic.class_school_type", "error", "classes", "schoolSourcedId",
         "the org is not of type school", _wrong_type("schoolSourcedId", "orgs", "school")),
    Rule("semantic.subject_codes_count", "warning", "classes", "subjectCodes",
         "subjectCodes does not list as many items as subjects", _subject_codes_count),
    Rule("semantic.agent_is_teacher", "warning", "users", "agentSourcedIds",
         "this agent is a teacher", _agent_is_teacher),
    Rule("semantic.agent_not_reciprocal", "warning", "users", "agentSourcedIds",
         "this agent does not list the user back", _agent_not_reciprocal),
    Rule("semantic.enrollment_school_type", "error", "enrollments", "schoolSourcedId",
         "the org is not of type school", _wrong_type("schoolSourcedId", "orgs", "school")),
    Rule("semantic.enrollment_school_mismatch", "warning", "enrollments", "schoolSourcedId",
         "the class belongs to another school", _enrollment_school_mismatch),
    Rule("semantic.date_order", "warning", "enrollments", "endDate",
         "endDate is before beginDate", _date_order("beginDate")),
    Rule("semantic.enrollment_outside_terms", "warning", "enrollments", "beginDate",
         "beginDate is outside the class's academic sessions", _outside_terms("beginDate")),
    Rule("semantic.enrollment_outside_terms", "warning", "enrollments", "endDate",
         "endDate is outside the class's academic sessions", _outside_terms("endDate")),
    Rule("semantic.enrollment_duplicate", "warning", "enrollments", "sourcedId",
         "an earlier row enrolls this user in this class with the same values; this copy was dropped",
         _enrollment_duplicate),
    Rule("semantic.enrollment_conflict", "error", "enrollments", "userSourcedId",
         "another row enrolls this user in this class with different values for overlapping dates",
         _enrollment_conflict),
    Rule("semantic.primary_teacher_count", "warning", "enrollments", "primary",
         "another primary teacher of this class overlaps in time", _primary_teacher_count),
    Rule("semantic.primary_not_teacher", "warning", "enrollments", "primary",
         "primary is true but the role is not teacher", _primary_not_teacher),
)  # fmt: skip
