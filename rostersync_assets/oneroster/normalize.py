"""Normalising a district's values before they are judged: certain fixes applied, each one reported.

The reader calls `normalize_header` for every file's header and `normalize_table` for every table it
builds; models.py then judges the fixed values. Only fixes that cannot change meaning are made
(REFERENCE §14, §15 "fix"): case (`TRUE`, `Teacher`, `SourcedId`), blanks spelled `NULL`, spaces
around ids and list items, OneRoster 1.0 statuses, single-digit grades, UTC timestamps. Anything
that needs a decision (`Y` as a boolean, `03/04/2024`, `Lehrer` as a role, a renamed header) is made
only when the district's profile says so, and otherwise left for the validator to reject.

Reporting. A feed that writes `TRUE` writes it on every row, so a diagnostic per fixed cell would bury
the report under millions of identical lines. Findings are aggregated: one diagnostic per (rule,
column, message) and file, whose `line` and `value` are those of the first row concerned and whose
message ends with the row count and the first `FIRST_LINES_SHOWN` line numbers, e.g.
`...: 812 row(s), line(s) 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, ...`. `Diagnostic` has no count field
yet (diagnostics.py is not this module's), so the count lives in the message only.

The spec's example timestamp on every row (REFERENCE M20) is valid, so nothing is fixed; there is no
info severity nor a rule of its own yet, so it is one `warning` per file under `fix.datetime` (the rule
for dateLastModified findings) whose message says why it matters: it cannot order updates.

Errors are aggregated too (`value.date_ambiguous`): the value is left as delivered, so models.py's
`value.date` still rejects every such row one by one; this module's finding adds the explanation and
the profile setting that would read the dates.

Vectorised: every step is a column operation. Columns with few distinct values (enumerations, dates,
grades, lists) are normalised on their distinct values and mapped back, so expensive steps (date
parsing, splitting lists) cost per distinct value, not per row.

End dates (REFERENCE M33): the 1.2 model calls enrollment and session `endDate` exclusive, but
producers write the last school day. rostersync reads `endDate` as INCLUSIVE, the last day of access,
so no student loses access on their last day. Nothing is rewritten here (that would shift every
date by a day and hide what the district sent); the sync must honour it where enrollment dates
become LMS access (`sync/diff.py`: active while `today <= endDate`; `sync/payloads.py`: an access end
sent to the LMS is the end of `endDate`, i.e. `endDate + 1 day` exclusive).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from rostersync_assets.oneroster import spec
from rostersync_assets.oneroster.diagnostics import Diagnostic, Severity, mask
from rostersync_assets.oneroster.profile import BOOLEANS, CEDS_GRADES, STATUSES, DistrictProfile
from rostersync_assets.oneroster.frames import byte_lengths, factorize, split_list

FIRST_LINES_SHOWN = 10

# Compared upper-cased and trimmed (REFERENCE M28).
NULL_TOKENS: frozenset[str] = frozenset({"NULL", "N/A"})
# Not blanked when they read NULL: "Null" is a real family name, and a wrongly blanked required name
# rejects a real person. A middle name "NULL" is the lesser harm.
NAME_COLUMNS: frozenset[str] = frozenset({"givenName", "familyName", "middleName"})
# Comma-separated lists that are not references (references say so in spec.py).
LIST_COLUMNS: frozenset[str] = frozenset({"grades", "subjects", "subjectCodes", "periods", "userIds"})

# REFERENCE §5 / M16: OneRoster 1.0 statuses, matched case-insensitively.
LEGACY_STATUSES: frozenset[str] = frozenset({"inactive", "deleted"})
# REFERENCE M21/M22: lower-cased delivered grade -> CEDS code; single digits lost their zero in Excel.
GRADE_WORDS: dict[str, str] = {
    **{str(grade): f"{grade:02d}" for grade in range(1, 10)},
    "k": "KG",
    "kindergarten": "KG",
    "prek": "PK",
    "pre-k": "PK",
    **{code.lower(): code for code in CEDS_GRADES},
}
# The spec's example dateLastModified, copied verbatim by producers (REFERENCE M20).
SPEC_EXAMPLE_DATETIME = "2012-04-23T18:25:43.511Z"

_ISO_DATE = r"\d{4}-\d{2}-\d{2}"
_CANONICAL_DATETIME = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z"
# Only timestamps that say their zone: a zone-less one is local time nobody can name (left as is).
_ZONED_DATETIME = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})"
# `4/13/2024`, `13.04.24`: groups first, separator, second, separator, year.
# ASCII digits only: Python's \d also matches other scripts' digits, which to_numeric cannot read.
_NUMERIC_DATE = r"^([0-9]{1,2})([/.-])([0-9]{1,2})([/.-])([0-9]{4}|[0-9]{2})$"
# The same shape for Arrow's RE2 (Python's $ also matches before a final newline): it picks the few
# values worth extracting.
_NUMERIC_DATE_SHAPE = r"^[0-9]{1,2}[/.-][0-9]{1,2}[/.-][0-9]{2,4}\n?$"
# Letters (Latin, with accents) in two or more space-separated words: `Mary O'Neil` as a sourcedId.
_LETTERS = "A-Za-zÀ-ÖØ-öø-ÿ"
_NAME_LIKE = rf"[{_LETTERS}][{_LETTERS}'’.-]*(?: [{_LETTERS}][{_LETTERS}'’.-]*)+"
# diagnostics.mask masks values of personal columns; a sourcedId that looks personal is masked like one.
_MASK_LIKE = "email"

_Transform = Callable[[pd.Series], pd.Series]


@dataclass(frozen=True)
class _Fix:
    """A rewrite of values; every value it changes is a row reported under `rule` as fixed."""

    rule: str
    message: str
    apply: _Transform


@dataclass(frozen=True)
class _Check:
    """A finding without a change: `explain` gives each value's message, or None when it is fine."""

    rule: str
    severity: Severity
    explain: _Transform
    masked: bool = False


_Step = _Fix | _Check


# --- header ---------------------------------------------------------------------------------------


def normalize_header(file_name: str, header: list[str], profile: DistrictProfile) -> tuple[list[str], list[Diagnostic]]:
    """The header with profile aliases, then case-insensitive spec matches, applied; a diagnostic per rename.

    Typos (`dataLastModified`) are not guessed: only an exact alias in the profile fixes them. A name is
    never renamed onto a column the header already has (or a rename already produced): the reader then
    reports the leftover as unknown instead of silently dropping one of two columns.
    """
    entity = spec.entity_of_file(file_name)
    if entity is None:
        return list(header), []
    columns = spec.SPECS[entity].columns
    by_lower = {column.lower(): column for column in columns}
    aliases = profile.header_aliases.get(file_name, {})
    renamed = list(header)
    diagnostics: list[Diagnostic] = []
    for position, name in enumerate(header):
        if name in columns:
            continue
        if name in aliases:
            rule, target = "fix.header_alias", aliases[name]
        else:
            rule, target = "fix.header_case", by_lower.get(name.lower())
        if target is not None and target not in renamed:
            renamed[position] = target
            # Header names are not cell values (a rename only happens to a spec or profile name), so the
            # delivered name may appear in the message.
            message = f"header {name!r} read as {target}"
            diagnostics.append(Diagnostic.create("fixed", rule, message, file=file_name, line=1, column=target))
    return renamed, diagnostics


# --- table ----------------------------------------------------------------------------------------


def normalize_table(
    entity: str, file_name: str, table: pd.DataFrame, profile: DistrictProfile
) -> tuple[pd.DataFrame, list[Diagnostic]]:
    """A fixed copy of a reader table (spec columns as `str` plus `_line`) and the aggregated findings.

    Diagnostics come column by column in spec order, steps in the order they are applied.
    """
    file_spec = spec.SPECS[entity]
    lines = table[spec.LINE_COLUMN].to_numpy()
    changed: dict[str, pd.Series] = {}
    diagnostics: list[Diagnostic] = []
    for column in file_spec.columns:
        steps = _steps(file_spec, column, profile)
        if steps:
            cells = _Cells.of(table[column], file_name, column, lines, distinct=_few_distinct(file_spec, column))
            values, found = cells.run(steps)
            diagnostics += found
            if values is not None:
                changed[column] = values
    # Copy-on-write: unchanged columns are shared with `table`, not copied.
    return table.assign(**changed), diagnostics


def _few_distinct(file_spec: spec.FileSpec, column: str) -> bool:
    """Whether a column repeats its values enough to normalise distinct values instead of rows.

    Ids and personal values are (nearly) unique per row: factorising them would only add a hash pass.
    """
    single_references = {reference.column for reference in file_spec.references if not reference.is_list}
    return column != "sourcedId" and column not in single_references and column not in spec.PERSONAL_COLUMNS


@dataclass(frozen=True)
class _Cells:
    """One column under normalisation: its values (distinct ones, or one per row) and their rows.

    codes: row -> position in `values`, or None when `values` are the rows themselves.
    """

    values: pd.Series
    codes: np.ndarray | None
    index: pd.Index
    file_name: str
    column: str
    lines: np.ndarray

    @classmethod
    def of(cls, column_values: pd.Series, file_name: str, column: str, lines: np.ndarray, distinct: bool) -> _Cells:
        if not distinct:
            return cls(column_values.reset_index(drop=True), None, column_values.index, file_name, column, lines)
        # No NA sentinel: a -1 code would make `take` pick the last value instead of a missing one.
        codes, uniques = factorize(column_values)
        return cls(uniques, codes, column_values.index, file_name, column, lines)

    def run(self, steps: list[_Step]) -> tuple[pd.Series | None, list[Diagnostic]]:
        """Apply the steps in order; the fixed column (None when nothing changed) and the findings."""
        current = self.values
        diagnostics: list[Diagnostic] = []
        for step in steps:
            if isinstance(step, _Fix):
                fixed = step.apply(current)
                if fixed is current:
                    # The transform found nothing to do: no need to compare millions of values.
                    continue
                rows = (fixed != current).to_numpy()
                if rows.any():
                    diagnostics.append(self._report("fixed", step.rule, step.message, rows, current, masked=False))
                    current = fixed
            else:
                explained = step.explain(current)
                for message, rows in _groups(explained):
                    diagnostics.append(self._report(step.severity, step.rule, message, rows, current, step.masked))
        if current is self.values:
            return None, diagnostics
        return self._rows(current), diagnostics

    def _rows(self, values: pd.Series) -> pd.Series:
        """Per-row values in the table's index (a take on the Arrow array, no Python strings)."""
        per_row = values.array if self.codes is None else values.array.take(self.codes)
        return pd.Series(per_row, index=self.index, dtype="str")

    def _report(
        self, severity: Severity, rule: str, message: str, flagged: np.ndarray, values: pd.Series, masked: bool
    ) -> Diagnostic:
        """One diagnostic for every row whose value is flagged; located at the first such row."""
        rows = flagged if self.codes is None else flagged[self.codes]
        positions = np.flatnonzero(rows)
        lines = self.lines[positions]
        shown = _first_lines(lines)
        first = positions[np.argmin(lines)]
        value = str(values.iloc[first if self.codes is None else self.codes[first]])
        more = ", ..." if len(lines) > len(shown) else ""
        where = f"{len(lines)} row(s), line(s) {', '.join(map(str, shown))}{more}"
        return Diagnostic.create(
            severity, rule, f"{message}: {where}", file=self.file_name, line=int(shown[0]), column=self.column,
            value=mask(_MASK_LIKE, value) if masked else value,
        )


def _first_lines(lines: np.ndarray) -> np.ndarray:
    """The FIRST_LINES_SHOWN smallest line numbers, sorted, without sorting a million of them."""
    if len(lines) > FIRST_LINES_SHOWN:
        lines = np.partition(lines, FIRST_LINES_SHOWN - 1)[:FIRST_LINES_SHOWN]
    return np.sort(lines)


def _groups(explained: pd.Series) -> list[tuple[str, np.ndarray]]:
    """(message, flagged values) for each distinct message of a check."""
    given = explained.notna().to_numpy()
    return [(message, (explained == message).to_numpy() & given) for message in pd.unique(explained[given])]


# --- which steps a column gets --------------------------------------------------------------------


def _steps(file_spec: spec.FileSpec, column: str, profile: DistrictProfile) -> list[_Step]:
    """The steps for one column, in order: blanks first, then spaces, then the column's own format."""
    references = {reference.column: reference for reference in file_spec.references}
    is_list = column in LIST_COLUMNS or (column in references and references[column].is_list)
    tokens = {"sourcedId", "status", "dateLastModified", *references, *file_spec.enums, *file_spec.booleans,
              *file_spec.dates, *file_spec.years}
    steps: list[_Step] = [] if column in NAME_COLUMNS else [_NULL_TOKEN]
    if is_list:
        steps.append(_LIST_WHITESPACE)
    elif column in tokens:
        steps.append(_WHITESPACE)
    if column == "status" or column in file_spec.enums:
        steps += _enum_steps(file_spec, column, profile)
    if column in file_spec.booleans:
        steps += _boolean_steps(profile)
    if column in file_spec.dates:
        steps += _date_steps(profile)
    if column == "dateLastModified":
        steps += _DATETIME_STEPS
    if column == "grades":
        steps += _grade_steps(profile)
    if column == "sourcedId":
        steps.append(_PERSONAL_ID)
    return steps


def _enum_steps(file_spec: spec.FileSpec, column: str, profile: DistrictProfile) -> list[_Step]:
    """Profile aliases first (a person's decision), then case, then (status only) OneRoster 1.0 words.

    Case is folded onto this file's values only: `Aide` in enrollments.csv must stay for the validator
    (aide is a users.csv role), not become a value that merely looks fixed.
    """
    aliases = _replacing(profile.enum_aliases.get(column, {}))
    allowed = STATUSES if column == "status" else file_spec.enums[column]
    steps: list[_Step] = [
        _Fix("fix.enum_alias", "mapped by the district profile's enum_aliases", aliases),
        _Fix("fix.enum_case", "matched an allowed value only when case is ignored", _canonical_case(allowed)),
    ]
    if column == "status":
        steps.append(_Fix("fix.status_alias", "inactive or deleted read as tobedeleted", _legacy_status))
    return steps


def _boolean_steps(profile: DistrictProfile) -> list[_Step]:
    aliases = _replacing(profile.boolean_aliases)
    return [
        _Fix("fix.boolean_alias", "mapped to true/false by the district profile's boolean_aliases", aliases),
        _Fix("fix.boolean_case", "true/false written in another case; lower-cased", _canonical_case(BOOLEANS)),
    ]


def _date_steps(profile: DistrictProfile) -> list[_Step]:
    """With a profile format: convert what it reads. Without: explain the dates rostersync will not guess."""
    if profile.date_format is None:
        return [_Check("value.date_ambiguous", "error", _explain_numeric_date)]
    message = f"read with the district profile's date_format {profile.date_format!r}"
    return [_Fix("fix.date_format", message, _dates_in_format(profile.date_format))]


def _grade_steps(profile: DistrictProfile) -> list[_Step]:
    return [
        _Fix("fix.grade", "grade(s) normalised to CEDS codes", _grade_items(profile.grade_map)),
        _Check("value.grade_unknown", "warning", _explain_unknown_grade),
    ]


# --- transforms (each works on values, distinct or per row) ----------------------------------------


def _blank_null_tokens(values: pd.Series) -> pd.Series:
    """Tokens blanked; `values` itself when there is none.

    Only a value of 3 or 4 bytes once trimmed can upper-case to NULL or N/A (no other character
    upper-cases to these ASCII letters), so upper-casing, the costly step, runs on those few values.
    """
    trimmed = values.str.strip()
    candidates = np.isin(byte_lengths(trimmed), (3, 4))
    if not candidates.any():
        return values
    tokens = candidates.copy()
    tokens[candidates] = trimmed[candidates].str.upper().isin(NULL_TOKENS).to_numpy(dtype=bool)
    return values.mask(tokens, "") if tokens.any() else values


def _strip(values: pd.Series) -> pd.Series:
    """Trimmed values; `values` itself when no value had spaces to trim (told by byte lengths, which
    is cheaper than comparing millions of strings)."""
    stripped = values.str.strip()
    return values if np.array_equal(byte_lengths(stripped), byte_lengths(values)) else stripped


def _strip_list_items(values: pd.Series) -> pd.Series:
    """`" t1 , t2"` -> `"t1,t2"`: spaces around items go, spaces inside an item (`Social Studies`) stay."""
    return values.str.replace(r"\s*,\s*", ",", regex=True).str.strip()


def _replacing(mapping: Mapping[str, str]) -> _Transform:
    """Exact-match replacement (profile aliases are written as the district writes them)."""
    return lambda values: values.replace(dict(mapping)) if mapping else values


def _canonical_case(allowed: frozenset[str]) -> _Transform:
    """Values equal to an allowed value when case is ignored become that value (`Scheduled` -> `scheduled`)."""
    by_lower = {value.lower(): value for value in allowed}

    def apply(values: pd.Series) -> pd.Series:
        canonical = values.str.lower().map(by_lower)
        return values.where(canonical.isna(), canonical)

    return apply


def _legacy_status(values: pd.Series) -> pd.Series:
    return values.mask(values.str.lower().isin(LEGACY_STATUSES), "tobedeleted")


def _dates_in_format(date_format: str) -> _Transform:
    """Non-ISO values that parse with the profile's format become ISO; the rest stay for the validator."""

    def apply(values: pd.Series) -> pd.Series:
        candidates = values.where(~values.str.fullmatch(_ISO_DATE) & (values != ""))
        parsed = pd.to_datetime(candidates, format=date_format, errors="coerce")
        return values.where(parsed.isna(), parsed.dt.strftime("%Y-%m-%d"))

    return apply


def _explain_numeric_date(values: pd.Series) -> pd.Series:
    """Why a `D/M/Y`-like value is not read, and which date_format would read it.

    Both parts <= 12: nobody can tell `03/04` from `04/03`. One part > 12: the order is clear for this
    value, but still not guessed: one file mixing both orders is what Excel produces.
    """
    shaped = values.str.match(_NUMERIC_DATE_SHAPE).to_numpy(dtype=bool)
    explained = pd.Series(None, index=values.index, dtype="object")
    if shaped.any():
        # str.extract runs Python's regex per value: only on the values shaped like a numeric date.
        explained[shaped] = _explain_numeric_shaped(values[shaped]).to_numpy()
    return explained


def _explain_numeric_shaped(values: pd.Series) -> pd.Series:
    """_explain_numeric_date for values that may be numeric dates (any value gives the same answer)."""
    parts = values.str.extract(_NUMERIC_DATE).fillna("")
    first, second = pd.to_numeric(parts[0]), pd.to_numeric(parts[2])
    year = parts[4].str.len().map({4: "%Y", 2: "%y"}).fillna("")
    month_first = "'%m" + parts[1] + "%d" + parts[3] + year + "'"
    day_first = "'%d" + parts[1] + "%m" + parts[3] + year + "'"
    is_date = (parts[1] != "") & (parts[1] == parts[3])
    ambiguous = "day/month order is ambiguous; set the district profile's date_format to "
    would_read = "not YYYY-MM-DD and not guessed; it would be read with the district profile's date_format "
    explained = np.select(
        [
            is_date & (first <= 12) & (second <= 12),
            is_date & (first <= 12) & (second > 12),
            is_date & (first > 12) & (second <= 12),
        ],
        [ambiguous + month_first + " (month first) or " + day_first + " (day first)", would_read + month_first,
         would_read + day_first],
        default=None,
    )
    return pd.Series(explained, index=values.index, dtype="object")


def _utc_timestamps(values: pd.Series, todo: pd.Series) -> pd.Series:
    """The `todo` values that parse as ISO 8601 rewritten as `YYYY-MM-DDTHH:MM:SS.sssZ` in UTC."""
    parsed = pd.to_datetime(values.where(todo), format="ISO8601", utc=True, errors="coerce")
    text = parsed.dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3] + "Z"
    return values.where(parsed.isna(), text)


def _zoned_to_utc(values: pd.Series) -> pd.Series:
    todo = values.str.fullmatch(_ZONED_DATETIME) & ~values.str.fullmatch(_CANONICAL_DATETIME)
    return _utc_timestamps(values, todo)


def _bare_date_to_midnight(values: pd.Series) -> pd.Series:
    return _utc_timestamps(values, values.str.fullmatch(_ISO_DATE))


def _explain_spec_example(values: pd.Series) -> pd.Series:
    message = (
        "the OneRoster spec's example timestamp, not a real modification time: "
        "never use it to skip or order updates"
    )
    return pd.Series(np.where(values == SPEC_EXAMPLE_DATETIME, message, None), index=values.index, dtype="object")


def _grade_items(grade_map: Mapping[str, str]) -> _Transform:
    """Each item of a grades list: the profile's map first, then `GRADE_WORDS`; others stay as delivered."""

    def apply(values: pd.Series) -> pd.Series:
        items = split_list(values)
        # astype("str"): a map without hits is float NaN, which would not fill with strings.
        mapped = items.map(dict(grade_map)).astype("str")
        fixed = mapped.fillna(items.str.lower().map(GRADE_WORDS).astype("str")).fillna(items)
        return fixed.groupby(level=0, sort=False).agg(",".join).reindex(values.index).astype("str")

    return apply


def _explain_unknown_grade(values: pd.Series) -> pd.Series:
    items = split_list(values)
    unknown = (~items.isin(CEDS_GRADES) & (items != "")).groupby(level=0).any().reindex(values.index)
    message = "not a CEDS grade code and not in the district profile's grade_map; kept as delivered"
    return pd.Series(np.where(unknown, message, None), index=values.index, dtype="object")


def _explain_personal_id(values: pd.Series) -> pd.Series:
    # A name has a space: the (slower) name pattern only runs on values with one.
    spaced = values.str.contains(" ", regex=False).to_numpy(dtype=bool)
    name_like = np.zeros(len(values), dtype=bool)
    if spaced.any():
        name_like[spaced] = values[spaced].str.fullmatch(_NAME_LIKE).to_numpy(dtype=bool)
    looks_personal = values.str.contains("@", regex=False).to_numpy(dtype=bool) | name_like
    message = "looks like an e-mail address or a name; sourcedIds must be opaque (value masked)"
    return pd.Series(np.where(looks_personal, message, None), index=values.index, dtype="object")


_NULL_TOKEN = _Fix("fix.null_token", "NULL, null or N/A read as blank", _blank_null_tokens)
_WHITESPACE = _Fix("fix.whitespace", "leading/trailing spaces removed", _strip)
_LIST_WHITESPACE = _Fix("fix.whitespace", "spaces around list items removed", _strip_list_items)
_DATETIME_STEPS: list[_Step] = [
    _Fix("fix.datetime", "timestamp normalised to UTC YYYY-MM-DDTHH:MM:SS.sssZ", _zoned_to_utc),
    _Fix("fix.datetime", "bare date read as midnight UTC", _bare_date_to_midnight),
    # No info severity and no rule of its own yet: reported as a warning under fix.datetime.
    _Check("fix.datetime", "warning", _explain_spec_example),
]
_PERSONAL_ID = _Check("value.id_personal", "warning", _explain_personal_id, masked=True)
