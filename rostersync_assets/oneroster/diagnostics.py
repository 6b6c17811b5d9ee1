"""Findings about a OneRoster delivery: what is wrong, where, how bad — and never whose data.

Every check (reader, pandera models, uniqueness, references) reports through `Diagnostic`, so the
Dagster layer, the run report and the district-facing e-mail all speak the same language: a stable
dotted rule id explained once in `RULES`, a severity, and a location (file, line, column).

Diagnostics leave the process (logs, Dagster metadata, reports sent to districts), so they must not
carry personal data: build them with `Diagnostic.create`, which masks values of
`spec.PERSONAL_COLUMNS`, and never put a cell value into a message.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, get_args

from rostersync_assets.oneroster.spec import PERSONAL_COLUMNS

# fatal: the package is rejected (nothing is synced); error: the row is rejected;
# warning: accepted and reported; fixed: normalised by rostersync and reported.
Severity = Literal["fatal", "error", "warning", "fixed"]
SEVERITIES: tuple[Severity, ...] = get_args(Severity)

# Rule id -> plain-language explanation. Ids are stable: dashboards, tests and district reports key on them.
RULES: dict[str, str] = {
    "package.file_unknown": (
        "A delivered file is not a file of the package's OneRoster version (wrong name or a sub-folder); it is ignored."
    ),
    "package.zip_invalid": "The zip archive cannot be read (damaged, encrypted or not a zip), so nothing can be synced.",
    "package.zip_subdirectory": (
        "The zip holds a folder or a file inside a folder; OneRoster files must sit at the zip root (REFERENCE P1)."
    ),
    "package.zip_unsafe_name": (
        "A zip entry name is absolute or climbs out of the archive (../, a drive letter or a backslash): zip-slip."
    ),
    "package.zip_duplicate_name": "Two zip entries have the same name, so which one is the file is ambiguous.",
    "package.zip_too_large": (
        "The zip unpacks to more than rostersync's limit (a zip bomb or a runaway export); it was not read."
    ),
    "manifest.missing": (
        "manifest.csv is missing, so the version and the bulk/delta/absent mode of each file are unknown."
    ),
    "manifest.invalid": (
        "manifest.csv is not a two-column propertyName,value table, so its properties cannot be trusted."
    ),
    "manifest.version_unsupported": (
        "oneroster.version is missing or names a version rostersync does not read (1.1 and 1.2/1.2.x are read; "
        "1.0 packages have no manifest and need the district profile's legacy_v1_0)."
    ),
    "manifest.property_duplicate": "A manifest property is given twice, so its value is ambiguous.",
    "manifest.property_unknown": (
        "A manifest property is not defined by the package's OneRoster version (often a typo such as fiel.users); "
        "it is ignored."
    ),
    "manifest.mode_invalid": "A file.<name> value is not bulk, delta or absent.",
    "manifest.entry_missing": (
        "The manifest has no file.<name> row for a synced file; the file is treated as absent (nothing changes)."
    ),
    "manifest.file_missing": "The manifest declares a file bulk or delta but the file is not in the package.",
    "manifest.file_unexpected": (
        "A file is in the package but the manifest declares it absent (or not at all); it is not read."
    ),
    "file.bom": "The file starts with a UTF-8 byte-order mark; it was removed.",
    "file.encoding": "The file is not valid UTF-8; the message gives the offset of the first bad byte.",
    "file.malformed": "The CSV parser could not read the file.",
    "file.empty": (
        "The file has no data rows. Fatal for a bulk file (it would mean 'delete everyone'; declare the file "
        "absent instead); a warning for a delta file (no changes)."
    ),
    "file.header_duplicate_column": "A column name appears twice in the header, so its values are ambiguous.",
    "file.header_missing_column": "A column the file must have in its OneRoster version is missing from the header.",
    "file.header_version_mismatch": (
        "The header has the columns of another OneRoster version than the package declares (1.0 names under a "
        "1.1 manifest, a 1.1 users.csv in a 1.2 package); the message names that version. Fatal for the file."
    ),
    "file.header_unknown_column": (
        "The header has a column the file's OneRoster version does not define (metadata.* extensions are allowed); "
        "it is ignored."
    ),
    "file.header_order": "The OneRoster columns are not first and in spec order; they were read by name.",
    "row.width": "The row does not have as many cells as the header.",
    "row.trailing_empty_cells": "Rows had empty cells beyond the header (a trailing comma); they were removed.",
    "row.line_break": "A quoted cell contains a line break, which OneRoster CSV does not allow.",
    "row.delta_status": "A row of a delta file has no status, or one other than active or tobedeleted; rejected.",
    "row.delta_date_last_modified": "A row of a delta file has no dateLastModified; rejected.",
    "row.bulk_lifecycle_filled": (
        "Rows of a bulk file fill status or dateLastModified, which bulk files leave blank; accepted (one per file)."
    ),
    "row.bulk_tobedeleted": (
        "A row of a bulk file is marked tobedeleted; it is left out of the snapshot, so the record is removed."
    ),
    "value.required": "A required value is blank.",
    "value.guid": "A sourcedId (or list of them) is not 1-255 characters from 0-9 A-Z a-z . _ / @ -.",
    "value.enum": "The value is not one of the allowed values (exact case).",
    "value.date": "The value is not a real calendar date written YYYY-MM-DD.",
    "value.boolean": "The value is not true or false (lowercase).",
    "value.year": "The value is not a four-digit year (YYYY).",
    "unique.sourced_id": "The sourcedId appears on more than one row of the file; every copy is rejected.",
    "reference.missing": (
        "The referenced record is not in the package. An error for a required reference, a warning for an "
        "optional one."
    ),
    "reference.rejected": "The referenced record is in the package but was itself rejected.",
    "reference.unchecked": (
        "The file a required reference points to is not a bulk file of this package, so the reference "
        "cannot be checked here."
    ),
    # Other OneRoster versions (versions.py).
    "version.converted": (
        "The file is in another OneRoster version's layout (1.0, or 1.2 users.csv) and was converted to the 1.1 "
        "columns rostersync syncs; the message lists renamed, blank-filled and derived columns."
    ),
    "roles.primary_count": (
        "OneRoster 1.2 roles.csv: a user must have exactly one primary role per org; every role row of that "
        "user and org is rejected."
    ),
    "roles.profile_user_mismatch": (
        "OneRoster 1.2 roles.csv: the role's userProfileSourcedId is not a userProfile of the same user."
    ),
    "roles.primary_org_without_role": (
        "OneRoster 1.2 users.csv: the user's primaryOrgSourcedId is not an org the user holds a role in."
    ),
    # Certain fixes and value findings made by normalize.py (profiles decide what is certain).
    "fix.header_alias": "A header was renamed to its spec column by the district profile's header aliases.",
    "fix.header_case": "A header matched a spec column only when case is ignored; it was renamed.",
    "fix.file_name_case": "A file name matched a OneRoster file only when case is ignored; it was read as that file.",
    "fix.enum_case": "An enumeration value matched only when case is ignored (Teacher for teacher); it was normalised.",
    "fix.enum_alias": "An enumeration value was mapped by the district profile's enum aliases.",
    "fix.boolean_case": "A boolean was written in another case (TRUE, True); it was normalised to true/false.",
    "fix.boolean_alias": "A boolean token (Y, N, 1, 0) was mapped to true/false by the district profile.",
    "fix.status_alias": "A status of inactive or deleted was read as tobedeleted (OneRoster 1.0 vocabulary).",
    "fix.null_token": "A literal NULL, null or N/A was read as blank.",
    "fix.whitespace": "Leading or trailing spaces around an identifier or list item were removed.",
    "fix.grade": "A grade was normalised to its CEDS code (9 to 09, K to KG) by rule or district profile.",
    "fix.date_format": "A date in the district profile's date format was converted to YYYY-MM-DD.",
    "fix.datetime": "A dateLastModified that was not UTC with milliseconds (or a bare date) was normalised to UTC.",
    "file.encoding_fallback": "The file is not UTF-8; it was decoded with the district profile's fallback encoding.",
    "value.date_ambiguous": (
        "A date is not YYYY-MM-DD and its day/month order is ambiguous; set the district profile's date_format."
    ),
    "value.grade_unknown": "A grade is not a CEDS code and the district profile does not map it; kept as delivered.",
    "value.id_personal": "A sourcedId looks like personal data (an e-mail address or a name); ids should be opaque.",
    # Clever's legacy SFTP format, converted to OneRoster tables by clever.py.
    "clever.converted": "The delivery is in Clever's legacy SFTP format; it was converted to OneRoster 1.1 tables.",
    "clever.file_missing": "A file Clever's format requires (schools, students, teachers, sections, enrollments) is missing.",
}


def mask(column: str | None, value: str | None) -> str | None:
    """The value as it may appear in a diagnostic: personal values become `<masked: N chars>`.

    The length is kept because "blank" versus "long" is what a data steward needs to find the cell.
    """
    if value and column in PERSONAL_COLUMNS:
        return f"<masked: {len(value)} chars>"
    return value


@dataclass(frozen=True)
class Diagnostic:
    """One finding about a delivery, located as precisely as it can be.

    Build it with `Diagnostic.create` so personal values are masked; the plain constructor stores
    `value` as given (used when loading diagnostics that are already masked).
    """

    severity: Severity
    rule: str
    message: str
    file: str | None = None
    line: int | None = None
    column: str | None = None
    value: str | None = None

    def __post_init__(self) -> None:
        # Undocumented rules or severities would silently break dashboards and report grouping.
        if self.rule not in RULES:
            raise ValueError(f"undocumented diagnostic rule {self.rule!r}; add it to RULES")
        if self.severity not in SEVERITIES:
            raise ValueError(f"unknown severity {self.severity!r}")

    @classmethod
    def create(
        cls,
        severity: Severity,
        rule: str,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: str | None = None,
        value: str | None = None,
    ) -> Diagnostic:
        """A diagnostic whose value is masked when `column` holds personal data."""
        return cls(severity, rule, message, file, line, column, mask(column, value))

    def to_dict(self) -> dict[str, str | int | None]:
        """Plain JSON-able form for Dagster metadata and stored reports."""
        return asdict(self)

    def describe(self) -> str:
        """One line for logs and reports: `users.csv line 14, column role, value 'Teacher': value.enum — …`."""
        location = " ".join(filter(None, [self.file, f"line {self.line}" if self.line is not None else None]))
        parts = [
            location,
            f"column {self.column}" if self.column is not None else "",
            f"value {self.value!r}" if self.value is not None else "",
        ]
        where = ", ".join(filter(None, parts))
        return f"{where}: {self.rule} — {self.message}" if where else f"{self.rule} — {self.message}"
