"""Read a OneRoster package (1.0, 1.1 or 1.2) into the canonical 1.1 tables, and say what was wrong with it.

Pure (file name -> raw bytes in, `RosterPackage` out) so the same code reads a zip, an SFTP folder or
an archived S3 prefix, and tests need no IO. Parsing is lenient and reporting strict (REFERENCE §1
P12, §15): CRLF/LF/CR endings, a BOM, columns in any order and trailing empty cells are accepted, but
every deviation becomes a `Diagnostic`. Values are kept exactly as delivered, as `str` (ids keep their
leading zeros); judging them is models.py's job, judging the package as a whole is validate.py's.

Other versions are read in their own layout and converted by versions.py, so the rest of rostersync
only ever sees the seven 1.1 tables. Large files take a pyarrow fast path when nothing in them needs
the exact csv module's line accounting (no blank lines, no quoted line breaks); both paths produce
identical tables and diagnostics.
"""

from __future__ import annotations

import csv
import gc
import io
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from rostersync_assets.oneroster import spec, versions
from rostersync_assets.oneroster.diagnostics import Diagnostic, Severity
from rostersync_assets.oneroster.models import GUID_PATTERN
from rostersync_assets.oneroster.normalize import normalize_header, normalize_table
from rostersync_assets.oneroster.profile import STRICT, DistrictProfile
from rostersync_assets.oneroster.spec import LINE_COLUMN
from rostersync_assets.oneroster.versions import Layout

__all__ = ["LINE_COLUMN", "RosterPackage", "read_package", "read_package_dir"]

EXTENSION_PREFIX = "metadata."
# Files at least this large try the pyarrow fast path; below it the csv module is as fast as it gets.
FAST_PATH_MIN_BYTES = 1 << 20

_BOM = b"\xef\xbb\xbf"
_MANIFEST_HEADER = ["propertyName", "value"]
_MANIFEST_PROPERTIES = frozenset(
    {"manifest.version", "oneroster.version", "source.systemName", "source.systemCode"}
)
_STATUSES = ("active", "tobedeleted")
_CHUNK = 1 << 24

# A CSV record: first and last physical line it spans, and its cells.
_Record = tuple[int, int, list[str]]
# Manifest property -> (line, value).
_Properties = dict[str, tuple[int, str]]


@dataclass
class RosterPackage:
    """A delivery as read, before its values are judged.

    version: `oneroster.version` as declared ("1.0" for a legacy package read without manifest,
        "" when there is no readable manifest).
    modes: bulk/delta/absent for every entity of `spec.ENTITIES` (all absent when the manifest is unusable).
    tables: one per bulk/delta file that could be read, converted to the canonical 1.1 shape: the spec
        columns in spec order as `str` ("" for blank) plus the int column `_line`; rows the reader
        could not map, or that a lifecycle rule rejects, are left out (and reported).
    diagnostics: what the reader found, in reading order.
    """

    version: str
    modes: dict[str, str]
    tables: dict[str, pd.DataFrame]
    diagnostics: list[Diagnostic]


def read_package(files: Mapping[str, bytes], profile: DistrictProfile = STRICT) -> RosterPackage:
    """Read a package given as file name -> raw bytes. Never raises on bad data: it reports it."""
    with _gc_paused():
        return _read(files, profile)


def read_package_dir(path: Path, profile: DistrictProfile = STRICT) -> RosterPackage:
    """Read a package unpacked into a directory; only top-level files belong to a package (REFERENCE P1)."""
    files = {item.name: item.read_bytes() for item in sorted(path.iterdir()) if item.is_file()}
    return read_package(files, profile)


def uninterpretable(version: str, diagnostics: list[Diagnostic]) -> RosterPackage:
    """A package that cannot be used as a whole: no file is read, so nothing can be synced from it."""
    return RosterPackage(version, dict.fromkeys(spec.ENTITIES, "absent"), {}, diagnostics)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Parsing allocates millions of acyclic lists; the cyclic GC would rescan them all, tripling read time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _read(files: Mapping[str, bytes], profile: DistrictProfile) -> RosterPackage:
    """Manifest first (it says which version and files to expect), then every declared file."""
    diagnostics: list[Diagnostic] = []
    files = _matched_names(files, diagnostics)
    interpreted = _interpret(files, profile, diagnostics)
    if isinstance(interpreted, str):
        return uninterpretable(interpreted, diagnostics)
    layout, version, declared = interpreted
    _check_delivered_files(files, declared, layout, diagnostics)
    modes = {entity: declared.get(entity, "absent") for entity in spec.ENTITIES}
    reading = _Reading(files, declared, layout, profile, diagnostics)
    tables = {}
    for file_spec in spec.SYNCED_FILES:
        if modes[file_spec.entity] != "absent" and file_spec.file_name in files:
            table = reading.synced(file_spec.entity)
            if table is not None:
                tables[file_spec.entity] = table
    for entity, columns in layout.unsynced.items():
        if declared.get(entity, "absent") != "absent" and f"{entity}.csv" in files:
            reading.structure_only(entity, columns)
    return RosterPackage(version, modes, tables, diagnostics)


def _matched_names(files: Mapping[str, bytes], diagnostics: list[Diagnostic]) -> Mapping[str, bytes]:
    """Files whose name is a OneRoster name in another case (`Users.csv`) read under that name (M7).

    Only when the exact name is not delivered too: then the odd one out stays an unknown file.
    """
    known = {spec.MANIFEST_FILE} | {f"{entity}.csv" for layout in versions.LAYOUTS for entity in layout.declarable}
    by_folded = {name.lower(): name for name in known}
    matched = dict(files)
    for name in sorted(files):
        proper = by_folded.get(name.lower())
        if name not in known and proper is not None and proper not in matched:
            matched[proper] = matched.pop(name)
            message = f"read as {proper}; OneRoster file names are case-sensitive"
            diagnostics.append(Diagnostic.create("fixed", "fix.file_name_case", message, file=name))
    return matched


def _interpret(
    files: Mapping[str, bytes], profile: DistrictProfile, diagnostics: list[Diagnostic]
) -> tuple[Layout, str, dict[str, str]] | str:
    """(layout, version, declared modes), or the version to report when the package is unusable."""
    if spec.MANIFEST_FILE not in files:
        if profile.legacy_v1_0:
            # OneRoster 1.0 had no manifest: every delivered file is a full snapshot.
            layout = versions.V1_0
            return layout, layout.version, {e: "bulk" for e in layout.synced if f"{e}.csv" in files}
        message = "the package has no manifest.csv; OneRoster 1.1 and 1.2 packages must have one"
        diagnostics.append(Diagnostic.create("fatal", "manifest.missing", message, file=spec.MANIFEST_FILE))
        return ""
    properties = _read_manifest(files, diagnostics)
    if properties is None:
        return ""
    line, version = properties.get("oneroster.version", (None, ""))
    layout = versions.layout_for(version)
    if layout is None:
        found = f"oneroster.version is {version!r}" if version else "oneroster.version is missing"
        message = f"{found}; rostersync reads OneRoster 1.1 and 1.2 packages (1.0 without manifest)"
        diagnostics.append(
            Diagnostic.create("fatal", "manifest.version_unsupported", message, file=spec.MANIFEST_FILE, line=line)
        )
        return version
    declared = _declared_modes(properties, layout, diagnostics)
    return version if declared is None else (layout, version, declared)


# --- bytes -> CSV records -------------------------------------------------------------------------


def _without_bom(name: str, raw: bytes, diagnostics: list[Diagnostic]) -> bytes:
    """The bytes after a UTF-8 BOM, which readers must tolerate (REFERENCE P4, M1)."""
    if not raw.startswith(_BOM):
        return raw
    diagnostics.append(Diagnostic.create("fixed", "file.bom", "removed the UTF-8 byte-order mark", file=name))
    return raw[len(_BOM):]


def _decode(name: str, body: bytes, offset: int, profile: DistrictProfile, diagnostics: list[Diagnostic]) -> str | None:
    """Strict UTF-8, or the profile's fallback encoding: guessing one would silently corrupt names (M2)."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        position = offset + exc.start
        where = f"byte 0x{body[exc.start]:02x} at offset {position} is not UTF-8"
    if profile.fallback_encoding:
        try:
            text = body.decode(profile.fallback_encoding)
        except (UnicodeDecodeError, LookupError):
            pass
        else:
            message = f"{where}; decoded as {profile.fallback_encoding} (the district profile's fallback)"
            diagnostics.append(Diagnostic.create("fixed", "file.encoding_fallback", message, file=name))
            return text
    message = f"{where}; re-export the file as UTF-8"
    diagnostics.append(Diagnostic.create("fatal", "file.encoding", message, file=name))
    return None


def _read_records(
    name: str, raw: bytes, profile: DistrictProfile, diagnostics: list[Diagnostic]
) -> list[_Record] | None:
    """The CSV records of a file, or None when it cannot be decoded or parsed (fatal reported)."""
    body = _without_bom(name, raw, diagnostics)
    text = _decode(name, body, len(raw) - len(body), profile, diagnostics)
    if text is None:
        return None
    try:
        return _records(text)
    except csv.Error as exc:
        # csv.Error messages describe the syntax problem, never cell contents.
        diagnostics.append(Diagnostic.create("fatal", "file.malformed", f"CSV parser stopped: {exc}", file=name))
        return None


def _records(text: str) -> list[_Record]:
    """Non-blank CSV records with the physical lines each spans.

    Universal newlines (`newline=None`) make CRLF, LF and CR-only files read alike; blank lines hold
    no data and are skipped, but still count for line numbers.
    """
    reader = csv.reader(io.StringIO(text, newline=None))
    records: list[_Record] = []
    last_line = 0
    for cells in reader:
        first_line, last_line = last_line + 1, reader.line_num
        if cells:
            records.append((first_line, last_line, cells))
    return records


@dataclass
class _Parsed:
    """A data file split into its header and the rows that map cell-for-cell onto it.

    body: columns 0..width-1 as `str`; lines: each row's line; row_findings: rows left out or trimmed,
    reported only once the header turns out usable (a headerless file must not leak its first row).
    """

    header: list[str]
    body: pd.DataFrame
    lines: np.ndarray
    row_findings: list[Diagnostic]


def _parse(name: str, raw: bytes, profile: DistrictProfile, diagnostics: list[Diagnostic]) -> _Parsed | None:
    """The file parsed, or None when it is unusable or has no header (fatal or file.empty reported by caller)."""
    body = _without_bom(name, raw, diagnostics)
    if len(body) >= FAST_PATH_MIN_BYTES and _fast_path_applies(body):
        parsed = _parse_fast(body)
        if parsed is not None:
            return parsed
    text = _decode(name, body, len(raw) - len(body), profile, diagnostics)
    if text is None:
        return None
    try:
        records = _records(text)
    except csv.Error as exc:
        diagnostics.append(Diagnostic.create("fatal", "file.malformed", f"CSV parser stopped: {exc}", file=name))
        return None
    if not records:
        return _Parsed([], pd.DataFrame(), np.empty(0, dtype=np.int64), [])
    header = records[0][2]
    rows, lines, findings = _data_rows(name, len(header), records[1:])
    body_frame = pd.DataFrame(rows, columns=range(len(header)), dtype="str")
    return _Parsed(header, body_frame, np.asarray(lines, dtype=np.int64), findings)


def _fast_path_applies(body: bytes) -> bool:
    """True unless something makes line numbers differ from row positions: a NUL, a blank first line,
    or a line break inside quotes (other blank lines are caught by `_parse_fast`'s row count).

    Quotes are paired in valid CSV, so a line break after an odd number of quotes sits inside a quoted
    cell; the check runs over numpy views in chunks and never copies the file.
    """
    if body[:1] in (b"\n", b"\r") or b"\x00" in body:
        return False
    if b'"' not in body:
        return True
    quotes_before = 0
    for start in range(0, len(body), _CHUNK):
        chunk = np.frombuffer(body, dtype=np.uint8, count=min(_CHUNK, len(body) - start), offset=start)
        quotes = np.flatnonzero(chunk == ord('"'))
        breaks = np.flatnonzero((chunk == ord("\n")) | (chunk == ord("\r")))
        if ((np.searchsorted(quotes, breaks) + quotes_before) & 1).any():
            return False
        quotes_before += len(quotes)
    return quotes_before % 2 == 0


def _physical_lines(body: bytes) -> int:
    """Lines in the file, ending in LF, CRLF or CR alike (a last line without a break counts too)."""
    breaks = body.count(b"\n")
    carriage_returns = body.count(b"\r")
    if carriage_returns:
        breaks += carriage_returns - body.count(b"\r\n")
    return breaks + (0 if body.endswith((b"\n", b"\r")) else 1)


def _parse_fast(body: bytes) -> _Parsed | None:
    """pyarrow's multi-threaded parser; None (use the csv module) on anything it would read differently:
    rows of another width, blank lines (pyarrow skips them, so fewer rows than lines after the header),
    invalid UTF-8, or cells beyond the csv module's field size limit."""
    first_break = min((i for i in (body.find(b"\n"), body.find(b"\r")) if i >= 0), default=len(body))
    try:
        header = next(csv.reader([body[:first_break].decode("utf-8")]))
    except (UnicodeDecodeError, csv.Error, StopIteration):
        return None
    names = [str(position) for position in range(len(header))]
    try:
        table = pa_csv.read_csv(
            pa.py_buffer(body),
            read_options=pa_csv.ReadOptions(column_names=names, skip_rows=1),
            parse_options=pa_csv.ParseOptions(newlines_in_values=False),
            convert_options=pa_csv.ConvertOptions(
                # large_string is what pandas 3's str dtype holds: no conversion copy in to_pandas.
                column_types=dict.fromkeys(names, pa.large_string()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowInvalid:
        return None
    if table.num_rows != _physical_lines(body) - 1:
        return None
    limit = csv.field_size_limit()
    if any((pc.max(pc.binary_length(column)).as_py() or 0) > limit for column in table.columns):
        return None
    frame = table.to_pandas(self_destruct=True, split_blocks=True)
    frame.columns = range(len(header))
    return _Parsed(header, frame, np.arange(2, len(frame) + 2, dtype=np.int64), [])


# --- manifest -------------------------------------------------------------------------------------


def _read_manifest(files: Mapping[str, bytes], diagnostics: list[Diagnostic]) -> _Properties | None:
    """The manifest's properties, or None when there is no usable manifest (fatal reported)."""
    name = spec.MANIFEST_FILE
    records = _read_records(name, files[name], STRICT, diagnostics)
    if records is None:
        return None
    if not records or records[0][2] != _MANIFEST_HEADER:
        message = "the header must be exactly propertyName,value"
        diagnostics.append(Diagnostic.create("fatal", "manifest.invalid", message, file=name, line=1))
        return None
    properties: _Properties = {}
    usable = True
    for line, _, cells in records[1:]:
        if len(cells) != len(_MANIFEST_HEADER):
            message = f"a manifest row must have 2 cells (propertyName,value), this one has {len(cells)}"
            diagnostics.append(Diagnostic.create("fatal", "manifest.invalid", message, file=name, line=line))
            usable = False
        elif cells[0] in properties:
            message = f"also given on line {properties[cells[0]][0]}"
            diagnostics.append(
                Diagnostic.create(
                    "fatal", "manifest.property_duplicate", message,
                    file=name, line=line, column="propertyName", value=cells[0],
                )
            )
            usable = False
        else:
            properties[cells[0]] = (line, cells[1])
    return properties if usable else None


def _declared_modes(
    properties: _Properties, layout: Layout, diagnostics: list[Diagnostic]
) -> dict[str, str] | None:
    """Entity -> mode for each `file.<entity>` property; None when a mode is invalid (fatal reported)."""
    name = spec.MANIFEST_FILE
    declared: dict[str, str] = {}
    usable = True
    for key, (line, value) in properties.items():
        entity = key.removeprefix("file.") if key.startswith("file.") else None
        if entity in layout.declarable:
            if value not in spec.FILE_MODES:
                message = f"{key} must be bulk, delta or absent"
                diagnostics.append(
                    Diagnostic.create(
                        "fatal", "manifest.mode_invalid", message, file=name, line=line, column="value", value=value
                    )
                )
                usable = False
            declared[entity] = value
        elif key not in _MANIFEST_PROPERTIES:
            message = f"not a OneRoster {layout.version} manifest property; ignored"
            diagnostics.append(
                Diagnostic.create(
                    "warning", "manifest.property_unknown", message,
                    file=name, line=line, column="propertyName", value=key,
                )
            )
    for entity in [*spec.ENTITIES, *layout.auxiliary]:
        if entity not in declared:
            message = f"no file.{entity} row; {entity}.csv is treated as absent (nothing changes)"
            diagnostics.append(Diagnostic.create("warning", "manifest.entry_missing", message, file=name))
    return declared if usable else None


def _check_delivered_files(
    files: Mapping[str, bytes], declared: dict[str, str], layout: Layout, diagnostics: list[Diagnostic]
) -> None:
    """Cross-check the manifest against the files actually delivered (REFERENCE §2)."""
    for entity, mode in declared.items():
        if mode != "absent" and f"{entity}.csv" not in files:
            message = f"the manifest declares {entity}.csv {mode} but the package does not contain it"
            diagnostics.append(Diagnostic.create("fatal", "manifest.file_missing", message, file=f"{entity}.csv"))
    for name in sorted(set(files) - {spec.MANIFEST_FILE}):
        entity = name.removesuffix(".csv") if name.endswith(".csv") else None
        if entity not in layout.declarable:
            message = f"not a OneRoster {layout.version} file name; ignored"
            diagnostics.append(Diagnostic.create("warning", "package.file_unknown", message, file=name))
        elif declared.get(entity, "absent") == "absent":
            message = "the manifest does not declare this file bulk or delta; it is not read"
            diagnostics.append(Diagnostic.create("warning", "manifest.file_unexpected", message, file=name))


# --- data files -----------------------------------------------------------------------------------


@dataclass
class _Reading:
    """One package being read: what each file needs (its layout, its mode, the profile) in one place."""

    files: Mapping[str, bytes]
    declared: dict[str, str]
    layout: Layout
    profile: DistrictProfile
    diagnostics: list[Diagnostic]

    def synced(self, entity: str) -> pd.DataFrame | None:
        """A synced file as its canonical 1.1 table, or None when the file is unusable (fatal reported)."""
        read = self._table(entity, self.layout.synced[entity], "fatal")
        if read is None:
            return None
        file_spec, table = read
        file_name = file_spec.file_name
        if self.layout is versions.V1_0:
            table, notes = versions.from_v1_0(entity, table)
            self.diagnostics.extend(notes)
        elif entity == "users" and self.layout is versions.V1_2:
            table, found = versions.from_v1_2_users(table, self._roles(table))
            self.diagnostics.extend(found)
        table, fixes = normalize_table(entity, file_name, table, self.profile)
        self.diagnostics.extend(fixes)
        return self._settled(file_name, self.declared[entity], table)

    def structure_only(self, entity: str, columns: tuple[str, ...]) -> None:
        """An unsynced file (gradebook, resources): header, row width and sourcedId syntax are reported
        as warnings (nothing is synced from it, so nothing is rejected) and the rows are dropped."""
        file_spec = spec.FileSpec(entity=entity, columns=columns, required=frozenset())
        read = self._table(entity, (file_spec,), "warning")
        if read is None:
            return
        table = read[1]
        bad = table[~table["sourcedId"].str.fullmatch(GUID_PATTERN)]
        message = "must be a sourcedId: 1-255 characters from 0-9 A-Z a-z . _ / @ -"
        self.diagnostics.extend(
            Diagnostic.create("warning", "value.guid", message, file=file_spec.file_name, line=int(line),
                              column="sourcedId", value=value)
            for line, value in zip(bad[LINE_COLUMN], bad["sourcedId"])
        )

    def _roles(self, users: pd.DataFrame) -> pd.DataFrame | None:
        """1.2 roles.csv rows usable for deriving users' roles; userProfiles.csv checked on the way."""
        users_target = users if self.declared.get("users") == "bulk" else None
        profiles = self._auxiliary("userProfiles")
        if profiles is not None:
            profiles, found = versions.check_profiles(profiles, users_target)
            self.diagnostics.extend(found)
        roles = self._auxiliary("roles")
        if roles is None:
            return None
        profiles_target = profiles if self.declared.get("userProfiles") == "bulk" else None
        roles, found = versions.check_roles(roles, profiles_target, users_target)
        self.diagnostics.extend(found)
        return roles

    def _auxiliary(self, entity: str) -> pd.DataFrame | None:
        mode = self.declared.get(entity, "absent")
        file_spec = self.layout.auxiliary[entity]
        if mode == "absent" or file_spec.file_name not in self.files:
            return None
        read = self._table(entity, (file_spec,), "fatal")
        return None if read is None else self._settled(file_spec.file_name, mode, read[1])

    def _table(
        self, entity: str, candidates: tuple[spec.FileSpec, ...], severity: Severity
    ) -> tuple[spec.FileSpec, pd.DataFrame] | None:
        """The file in the best-fitting delivered layout (columns of that layout + `_line`), or None."""
        name = candidates[0].file_name
        mode = self.declared[entity]
        parsed = _parse(name, self.files[name], self.profile, self.diagnostics)
        if parsed is None:
            return None
        if not parsed.header:
            return _without_rows(candidates[0], mode, severity, self.diagnostics)
        header, fixes = normalize_header(name, parsed.header, self.profile)
        self.diagnostics.extend(fixes)
        file_spec = min(candidates, key=lambda candidate: len(set(candidate.columns) - set(header)))
        positions = _header_positions(file_spec, header, self.layout, severity, self.diagnostics)
        if positions is None:
            return None
        self.diagnostics.extend(parsed.row_findings if severity == "fatal" else map(_as_warning, parsed.row_findings))
        if parsed.body.empty:
            return _without_rows(file_spec, mode, severity, self.diagnostics)
        table = parsed.body[positions].set_axis(list(file_spec.columns), axis="columns")
        table[LINE_COLUMN] = parsed.lines
        return file_spec, table

    def _settled(self, file_name: str, mode: str, table: pd.DataFrame) -> pd.DataFrame:
        """The rows that belong in the snapshot or the change set after the bulk/delta lifecycle rules."""
        return _lifecycle(file_name, mode, table, self.diagnostics)


def _as_warning(diagnostic: Diagnostic) -> Diagnostic:
    """A row error in a file nothing is synced from rejects nothing: it is reported as a warning."""
    return replace(diagnostic, severity="warning") if diagnostic.severity == "error" else diagnostic


def _without_rows(
    file_spec: spec.FileSpec, mode: str, severity: Severity, diagnostics: list[Diagnostic]
) -> tuple[spec.FileSpec, pd.DataFrame] | None:
    """A file without data rows: "nothing changed" in delta, but never "delete everyone" in bulk (M14)."""
    if mode == "bulk":
        message = "a bulk file must have at least one data row; declare the file absent to send nothing"
        diagnostics.append(Diagnostic.create(severity, "file.empty", message, file=file_spec.file_name))
        return None
    message = "the delta file has no data rows (no changes)"
    diagnostics.append(Diagnostic.create("warning", "file.empty", message, file=file_spec.file_name))
    empty = pd.DataFrame({column: pd.Series(dtype="str") for column in file_spec.columns})
    empty[LINE_COLUMN] = np.empty(0, dtype=np.int64)
    return file_spec, empty


def _header_positions(
    file_spec: spec.FileSpec, header: list[str], layout: Layout, severity: Severity, diagnostics: list[Diagnostic]
) -> list[int] | None:
    """Where each layout column sits in the header, or None when the header is unusable (reported)."""
    name = file_spec.file_name
    counts = Counter(header)
    duplicated = [column for column in file_spec.columns if counts[column] > 1]
    missing = [column for column in file_spec.columns if column not in counts]
    resembled = versions.resembled_version(file_spec.entity, header, layout) if missing else None
    if resembled is not None:
        message = (
            f"the header looks like OneRoster {resembled}, but the package is read as {layout.version} "
            f"(missing: {', '.join(missing)}); fix the export or map the names with header_aliases"
        )
        diagnostics.append(Diagnostic.create(severity, "file.header_version_mismatch", message, file=name, line=1))
        return None
    for column in duplicated:
        message = f"the header names {column} {counts[column]} times"
        diagnostics.append(
            Diagnostic.create(severity, "file.header_duplicate_column", message, file=name, line=1, column=column)
        )
    for column in missing:
        message = f"the header lacks the {column} column"
        diagnostics.append(
            Diagnostic.create(severity, "file.header_missing_column", message, file=name, line=1, column=column)
        )
    if duplicated or missing:
        # Not reporting unknown names here: a headerless file would turn its first (personal) row into them.
        return None
    for column in counts:
        if column not in file_spec.columns and not column.startswith(EXTENSION_PREFIX):
            message = f"not a OneRoster {layout.version} {name} column; ignored"
            diagnostics.append(
                Diagnostic.create("warning", "file.header_unknown_column", message, file=name, line=1, column=column)
            )
    if layout.ordered and tuple(header[: len(file_spec.columns)]) != file_spec.columns:
        message = "the OneRoster columns are not first and in spec order; they were read by name"
        diagnostics.append(Diagnostic.create("warning", "file.header_order", message, file=name, line=1))
    return [header.index(column) for column in file_spec.columns]


def _data_rows(name: str, width: int, records: list[_Record]) -> tuple[list[list[str]], list[int], list[Diagnostic]]:
    """Rows that map cell-for-cell onto the header, with their line numbers, and findings on the others."""
    rows: list[list[str]] = []
    lines: list[int] = []
    trimmed: list[int] = []
    findings: list[Diagnostic] = []
    for first_line, last_line, cells in records:
        beyond_header = cells[width:]
        if last_line != first_line:
            message = f"a quoted cell spans lines {first_line}-{last_line}; line breaks are not allowed in cells"
            findings.append(Diagnostic.create("error", "row.line_break", message, file=name, line=first_line))
        elif len(cells) < width or any(beyond_header):
            message = f"the row has {len(cells)} cells but the header has {width}"
            findings.append(Diagnostic.create("error", "row.width", message, file=name, line=first_line))
        else:
            if beyond_header:
                trimmed.append(first_line)
            rows.append(cells[:width] if beyond_header else cells)
            lines.append(first_line)
    if trimmed:
        # One finding per file, not per row: a trailing comma on every row is a single export setting.
        message = f"{len(trimmed)} row(s) had empty cells beyond the header; removed them (first: line {trimmed[0]})"
        findings.append(Diagnostic.create("fixed", "row.trailing_empty_cells", message, file=name, line=trimmed[0]))
    return rows, lines, findings


# --- bulk and delta rows (REFERENCE §3, M15) ------------------------------------------------------


def _lifecycle(file_name: str, mode: str, table: pd.DataFrame, diagnostics: list[Diagnostic]) -> pd.DataFrame:
    """Delta rows need status and dateLastModified (else rejected); bulk rows should leave them blank
    (tolerated, one warning per file) and a bulk row marked tobedeleted leaves the snapshot."""
    status, modified = table["status"], table["dateLastModified"]
    if mode == "delta":
        bad_status = ~status.isin(_STATUSES)
        no_date = modified.str.strip() == ""
        diagnostics.extend(sorted(
            [*_per_row(table[bad_status], "error", "row.delta_status", "status", file_name,
                       "a delta row needs status active or tobedeleted"),
             *_per_row(table[no_date], "error", "row.delta_date_last_modified", "dateLastModified", file_name,
                       "a delta row needs its dateLastModified")],
            key=lambda d: d.line or 0,
        ))
        return _kept(table, ~(bad_status | no_date))
    filled = ((status != "") | (modified != "")).to_numpy()
    if filled.any():
        first = int(table[LINE_COLUMN].to_numpy()[filled.argmax()])
        message = f"{int(filled.sum())} bulk row(s) fill status or dateLastModified, which bulk leaves blank (first: line {first})"
        diagnostics.append(Diagnostic.create("warning", "row.bulk_lifecycle_filled", message, file=file_name, line=first))
    deleted = status == "tobedeleted"
    if not deleted.any():
        return table
    diagnostics.extend(_per_row(table[deleted], "warning", "row.bulk_tobedeleted", "status", file_name,
                                "marked tobedeleted in a bulk file: left out of the snapshot"))
    return _kept(table, ~deleted)


def _per_row(
    rows: pd.DataFrame, severity: Severity, rule: str, column: str, file_name: str, message: str
) -> list[Diagnostic]:
    return [
        Diagnostic.create(severity, rule, message, file=file_name, line=int(line), column=column, value=value)
        for line, value in zip(rows[LINE_COLUMN], rows[column])
    ]


def _kept(table: pd.DataFrame, keep: pd.Series) -> pd.DataFrame:
    return table if keep.all() else table[keep].reset_index(drop=True)
