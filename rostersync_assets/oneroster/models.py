"""pandera schemas of the 7 synced OneRoster 1.1 files, derived from spec.py so each rule is stated once.

A schema holds the value rules of one file (REFERENCE §4-§6): required values are not blank,
sourcedIds (and lists of them) have GUID syntax, enumerations match exactly (case included), dates
are real `YYYY-MM-DD` calendar dates, booleans are `true`/`false`, years are `YYYY`. Optional values
may be blank. Checks are vectorised string operations, and each check is named by its diagnostic rule id
so failure cases become `Diagnostic`s directly.

Speed (8 M enrollments a night): blanks are found from Arrow's string lengths and whitespace test, with
no trimmed copy of the column; format rules run on the non-blank values only, and on each distinct
value once for columns whose values repeat (all but sourcedId, user references and personal values:
an enrollments.csv of 8 M rows names a few hundred thousand classes and a few thousand schools), and
GUID syntax is read from the column's bytes, with the regex only for columns holding other characters.

`schema_for` is also what the Dagster layer publishes as an asset's column schema.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
import pandas as pd
import pandera.pandas as pa

from rostersync_assets.oneroster import spec
from rostersync_assets.oneroster.diagnostics import Diagnostic
from rostersync_assets.oneroster.frames import blank_mask, byte_lengths, consists_of, factorize
from rostersync_assets.oneroster.spec import FILE_COLUMN, LINE_COLUMN

GUID_PATTERN = r"[0-9A-Za-z._/@-]{1,255}"
GUID_CHARACTERS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz._/@-"
GUID_MAX_LENGTH = 255
GUID_LIST_PATTERN = rf"\s*{GUID_PATTERN}\s*(?:,\s*{GUID_PATTERN}\s*)*"
DATE_PATTERN = r"\d{4}-\d{2}-\d{2}"
YEAR_PATTERN = r"\d{4}"
EXT_TOKEN_PATTERN = r"ext:[A-Za-z0-9.\-_]+"
BOOLEANS = frozenset({"true", "false"})

_Test = Callable[[pd.Series], pd.Series]


def _is_present(values: pd.Series) -> pd.Series:
    """Not blank: empty or whitespace-only is OneRoster's way of saying "no value" (REFERENCE P9)."""
    return pd.Series(~blank_mask(values), index=values.index)


def _passed(result: pd.Series) -> np.ndarray:
    return result.to_numpy(dtype=bool, na_value=False)


def _blank_or(test: _Test) -> _Test:
    """Apply a format test to the values that are given; blanks are value.required's business."""

    def check(values: pd.Series) -> pd.Series:
        blank = blank_mask(values)
        if not blank.any():
            return test(values)
        passed = blank.copy()
        if not blank.all():
            passed[~blank] = _passed(test(values[~blank]))
        return pd.Series(passed, index=values.index)

    return check


def _per_distinct(test: _Test) -> _Test:
    """`test` run once per distinct value and spread back to the rows (same result, fewer evaluations)."""

    def check(values: pd.Series) -> pd.Series:
        codes, distinct = factorize(values)
        return pd.Series(_passed(test(distinct))[codes], index=values.index)

    return check


def _matching(pattern: str) -> _Test:
    return _blank_or(lambda values: values.str.fullmatch(pattern))


def _is_guid(values: pd.Series) -> pd.Series:
    """GUID_PATTERN, decided without a regex when every value is made of GUID characters (the usual
    case: then only the length can fail); the regex runs when some value has another character."""
    if consists_of(values, GUID_CHARACTERS):
        lengths = byte_lengths(values)
        return pd.Series((lengths >= 1) & (lengths <= GUID_MAX_LENGTH), index=values.index)
    return values.str.fullmatch(GUID_PATTERN)


def _one_of(allowed: frozenset[str], extensible: bool = False) -> _Test:
    if extensible:
        return _blank_or(lambda values: values.isin(allowed) | values.str.fullmatch(EXT_TOKEN_PATTERN))
    return _blank_or(lambda values: values.isin(allowed))


def _is_calendar_date(values: pd.Series) -> pd.Series:
    """`YYYY-MM-DD` that names a real day (2021-02-29 fails); the regex stops to_datetime's leniency."""
    well_formed = values.where(values.str.fullmatch(DATE_PATTERN))
    return pd.to_datetime(well_formed, format="%Y-%m-%d", errors="coerce").notna()


def _column_checks(file_spec: spec.FileSpec, column: str) -> list[pa.Check]:
    """The value rules of one column, in the order a data steward would fix them."""
    guid_lists = {reference.column for reference in file_spec.references if reference.is_list}
    guids = {"sourcedId"} | {reference.column for reference in file_spec.references}
    checks: list[pa.Check] = []
    # Format rules of columns whose values repeat run per distinct value. Ids, user references (a user
    # has a handful of enrollments) and personal values are (nearly) unique per row, where hashing would
    # only add a pass. value.required needs no hashing.
    people = {reference.column for reference in file_spec.references if reference.target == "users"}
    repeats = column != "sourcedId" and column not in people and column not in spec.PERSONAL_COLUMNS

    def check(test: _Test, name: str, error: str) -> pa.Check:
        return pa.Check(_per_distinct(test) if repeats else test, name=name, error=error)

    if column in file_spec.required:
        checks.append(pa.Check(_is_present, name="value.required", error="a value is required"))
    if column in guid_lists:
        error = "must be a comma-separated list of sourcedIds"
        checks.append(check(_matching(GUID_LIST_PATTERN), "value.guid", error))
    elif column in guids:
        error = "must be a sourcedId: 1-255 characters from 0-9 A-Z a-z . _ / @ -"
        checks.append(check(_blank_or(_is_guid), "value.guid", error))
    if column in file_spec.enums:
        allowed = file_spec.enums[column]
        extensible = column in file_spec.extensible
        tokens = ", ".join(sorted(allowed)) + (" or ext:<name>" if extensible else "")
        error = f"must be one of (exact case): {tokens}"
        checks.append(check(_one_of(allowed, extensible), "value.enum", error))
    if column in file_spec.booleans:
        checks.append(check(_one_of(BOOLEANS), "value.boolean", "must be true or false (lowercase)"))
    if column in file_spec.dates:
        error = "must be a calendar date written YYYY-MM-DD"
        checks.append(check(_blank_or(_is_calendar_date), "value.date", error))
    if column in file_spec.years:
        checks.append(check(_matching(YEAR_PATTERN), "value.year", "must be a four-digit year (YYYY)"))
    return checks


@functools.cache
def schema_for(entity: str, version: str = "1.1") -> pa.DataFrameSchema:
    """The schema of one synced file's table as the reader produces it (spec columns + `_line`, and
    `_file` for tables converted from several files).

    `version` selects the value vocabularies (1.2 accepts `ext:` tokens); the columns are always 1.1's.
    """
    return schema_of(spec.canonical_spec(entity, version))


def schema_of(file_spec: spec.FileSpec) -> pa.DataFrameSchema:
    """The schema of any table shaped like `file_spec` (also 1.2's roles/userProfiles, which are not synced)."""
    columns = {column: pa.Column(str, _column_checks(file_spec, column)) for column in file_spec.columns}
    columns[LINE_COLUMN] = pa.Column(int, description="1-based line of the row in its file (header = 1)")
    columns[FILE_COLUMN] = pa.Column(
        str, required=False, description="the file the row came from, when the table was built from several"
    )
    return pa.DataFrameSchema(
        columns, name=file_spec.entity, description=f"OneRoster {file_spec.file_name}", strict=True, ordered=True
    )


def validate_table(entity: str, table: pd.DataFrame, version: str = "1.1") -> list[Diagnostic]:
    """One error per failing cell of a synced table read by the reader, ordered by line then column."""
    return validate_with(schema_for(entity, version), spec.SPECS[entity].file_name, table)


def validate_with(schema: pa.DataFrameSchema, file_name: str, table: pd.DataFrame) -> list[Diagnostic]:
    """One error per failing cell of `table` under `schema`, ordered by line then column; each names
    `file_name`, or the row's own file for tables with `_file`."""
    try:
        # inplace: nothing is coerced, so this only avoids copying a million-row table.
        schema.validate(table, lazy=True, inplace=True)
    except pa.errors.SchemaErrors as exc:
        return _diagnostics(schema, file_name, table, exc.failure_cases)
    return []


def _diagnostics(
    schema: pa.DataFrameSchema, file_name: str, table: pd.DataFrame, failures: pd.DataFrame
) -> list[Diagnostic]:
    """Turn pandera failure cases (one per failing cell) into masked, located diagnostics."""
    structural = failures["index"].isna()
    if structural.any():
        # A missing column or wrong dtype is a bug in whoever built the table, not a data problem.
        problems = failures.loc[structural, ["check", "failure_case"]].to_dict("records")
        raise TypeError(f"the {schema.name} table does not have the reader's shape: {problems}")
    order = {column: position for position, column in enumerate(schema.columns)}
    rows = table.loc[failures["index"]]
    failures = failures.assign(
        line=rows[LINE_COLUMN].to_numpy(),
        file=rows[FILE_COLUMN].to_numpy() if FILE_COLUMN in table.columns else file_name,
        position=failures["column"].map(order),
    ).sort_values(["line", "position", "check_number"], kind="stable")
    diagnostics = []
    for file, line, column, number, value in zip(
        failures["file"], failures["line"], failures["column"], failures["check_number"], failures["failure_case"]
    ):
        check = schema.columns[column].checks[number]
        diagnostics.append(
            Diagnostic.create("error", check.name, check.error, file=file, line=int(line), column=column, value=value)
        )
    return diagnostics
