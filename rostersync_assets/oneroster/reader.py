"""Read a OneRoster 1.1 package into one string table per synced file, and say what was wrong with it.

Pure (file name -> raw bytes in, `RosterPackage` out) so the same code reads a zip, an SFTP folder or
an archived S3 prefix, and tests need no IO. Parsing is lenient and reporting strict (REFERENCE §1
P12, §15): CRLF/LF/CR endings, a BOM, columns in any order and trailing empty cells are accepted, but
every deviation becomes a `Diagnostic`. Values are kept exactly as delivered, as `str` (ids keep their
leading zeros); judging them is models.py's job, judging the package as a whole is validate.py's.
"""

from __future__ import annotations

import csv
import gc
import io
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rostersync_assets.oneroster import spec
from rostersync_assets.oneroster.diagnostics import Diagnostic

# Every table carries the 1-based line of each row in its file (the header is line 1), so any later
# finding about a row can point a data steward at it.
LINE_COLUMN = "_line"
SUPPORTED_VERSION = "1.1"
EXTENSION_PREFIX = "metadata."

_BOM = b"\xef\xbb\xbf"
_MANIFEST_HEADER = ["propertyName", "value"]
_MANIFEST_PROPERTIES = frozenset(
    {"manifest.version", "oneroster.version", "source.systemName", "source.systemCode"}
)
# Data files a 1.1 manifest may declare with a `file.<entity>` property.
_DECLARABLE = frozenset(spec.ENTITIES) | spec.UNSYNCED_ENTITIES_V1_1

# A CSV record: first and last physical line it spans, and its cells.
_Record = tuple[int, int, list[str]]
# Manifest property -> (line, value).
_Properties = dict[str, tuple[int, str]]


@dataclass
class RosterPackage:
    """A delivery as read, before its values are judged.

    version: `oneroster.version` as declared ("" when there is no readable manifest).
    modes: bulk/delta/absent for every entity of `spec.ENTITIES` (all absent when the manifest is unusable).
    tables: one per bulk/delta file that could be read: the spec columns in spec order as `str`
        ("" for blank) plus the int column `_line`; rows the reader could not map are left out
        (and reported).
    diagnostics: what the reader found, in reading order.
    """

    version: str
    modes: dict[str, str]
    tables: dict[str, pd.DataFrame]
    diagnostics: list[Diagnostic]


def read_package(files: Mapping[str, bytes]) -> RosterPackage:
    """Read a package given as file name -> raw bytes. Never raises on bad data: it reports it."""
    with _gc_paused():
        return _read(files)


def read_package_dir(path: Path) -> RosterPackage:
    """Read a package unpacked into a directory; only top-level files belong to a package (REFERENCE P1)."""
    return read_package({item.name: item.read_bytes() for item in sorted(path.iterdir()) if item.is_file()})


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


def _read(files: Mapping[str, bytes]) -> RosterPackage:
    """Manifest first: without a usable one no file can be interpreted; then every declared synced file."""
    diagnostics: list[Diagnostic] = []
    properties = _read_manifest(files, diagnostics)
    if properties is None:
        return _uninterpretable("", diagnostics)
    version = properties.get("oneroster.version", (None, ""))[1]
    if not _version_supported(properties, diagnostics):
        return _uninterpretable(version, diagnostics)
    declared = _declared_modes(properties, diagnostics)
    if declared is None:
        return _uninterpretable(version, diagnostics)
    _check_delivered_files(files, declared, diagnostics)
    modes = {entity: declared.get(entity, "absent") for entity in spec.ENTITIES}
    tables = {}
    for file_spec in spec.SYNCED_FILES:
        raw = files.get(file_spec.file_name)
        if modes[file_spec.entity] != "absent" and raw is not None:
            table = _read_table(file_spec, modes[file_spec.entity], raw, diagnostics)
            if table is not None:
                tables[file_spec.entity] = table
    return RosterPackage(version, modes, tables, diagnostics)


def _uninterpretable(version: str, diagnostics: list[Diagnostic]) -> RosterPackage:
    """A package whose manifest cannot be used: no file is read, so nothing can be synced from it."""
    return RosterPackage(version, dict.fromkeys(spec.ENTITIES, "absent"), {}, diagnostics)


# --- bytes -> CSV records -------------------------------------------------------------------------


def _read_records(name: str, raw: bytes, diagnostics: list[Diagnostic]) -> list[_Record] | None:
    """The CSV records of a file, or None when it cannot be decoded or parsed (fatal reported)."""
    text = _decode(name, raw, diagnostics)
    if text is None:
        return None
    try:
        return _records(text)
    except csv.Error as exc:
        # csv.Error messages describe the syntax problem, never cell contents.
        diagnostics.append(Diagnostic.create("fatal", "file.malformed", f"CSV parser stopped: {exc}", file=name))
        return None


def _decode(name: str, raw: bytes, diagnostics: list[Diagnostic]) -> str | None:
    """Strict UTF-8: guessing another encoding would silently corrupt names (REFERENCE M2)."""
    bom = len(_BOM) if raw.startswith(_BOM) else 0
    if bom:
        diagnostics.append(Diagnostic.create("fixed", "file.bom", "removed the UTF-8 byte-order mark", file=name))
    try:
        return raw[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = bom + exc.start
        message = f"byte 0x{raw[offset]:02x} at offset {offset} is not UTF-8; re-export the file as UTF-8"
        diagnostics.append(Diagnostic.create("fatal", "file.encoding", message, file=name))
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


# --- manifest -------------------------------------------------------------------------------------


def _read_manifest(files: Mapping[str, bytes], diagnostics: list[Diagnostic]) -> _Properties | None:
    """The manifest's properties, or None when there is no usable manifest (fatal reported)."""
    name = spec.MANIFEST_FILE
    if name not in files:
        message = "the package has no manifest.csv; a OneRoster 1.1 package must have one"
        diagnostics.append(Diagnostic.create("fatal", "manifest.missing", message, file=name))
        return None
    records = _read_records(name, files[name], diagnostics)
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


def _version_supported(properties: _Properties, diagnostics: list[Diagnostic]) -> bool:
    """Column lists and rules differ by version (REFERENCE §9): reading a 1.2 package as 1.1 would misreport."""
    line, version = properties.get("oneroster.version", (None, ""))
    if version == SUPPORTED_VERSION:
        return True
    found = f"oneroster.version is {version!r}" if version else "oneroster.version is missing"
    message = f"{found}; rostersync reads OneRoster {SUPPORTED_VERSION} packages"
    diagnostics.append(
        Diagnostic.create("fatal", "manifest.version_unsupported", message, file=spec.MANIFEST_FILE, line=line)
    )
    return False


def _declared_modes(properties: _Properties, diagnostics: list[Diagnostic]) -> dict[str, str] | None:
    """Entity -> mode for each `file.<entity>` property; None when a mode is invalid (fatal reported)."""
    name = spec.MANIFEST_FILE
    declared: dict[str, str] = {}
    usable = True
    for key, (line, value) in properties.items():
        entity = key.removeprefix("file.") if key.startswith("file.") else None
        if entity in _DECLARABLE:
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
            message = "not a OneRoster 1.1 manifest property; ignored"
            diagnostics.append(
                Diagnostic.create(
                    "warning", "manifest.property_unknown", message,
                    file=name, line=line, column="propertyName", value=key,
                )
            )
    for entity in spec.ENTITIES:
        if entity not in declared:
            message = f"no file.{entity} row; {entity}.csv is treated as absent (nothing changes)"
            diagnostics.append(Diagnostic.create("warning", "manifest.entry_missing", message, file=name))
    return declared if usable else None


def _check_delivered_files(
    files: Mapping[str, bytes], declared: dict[str, str], diagnostics: list[Diagnostic]
) -> None:
    """Cross-check the manifest against the files actually delivered (REFERENCE §2)."""
    for entity, mode in declared.items():
        if mode != "absent" and f"{entity}.csv" not in files:
            message = f"the manifest declares {entity}.csv {mode} but the package does not contain it"
            diagnostics.append(Diagnostic.create("fatal", "manifest.file_missing", message, file=f"{entity}.csv"))
    for name in sorted(set(files) - {spec.MANIFEST_FILE}):
        entity = name.removesuffix(".csv") if name.endswith(".csv") else None
        if entity not in _DECLARABLE:
            message = "not a OneRoster 1.1 file name; ignored"
            diagnostics.append(Diagnostic.create("warning", "package.file_unknown", message, file=name))
        elif declared.get(entity, "absent") == "absent":
            message = "the manifest does not declare this file bulk or delta; it is not read"
            diagnostics.append(Diagnostic.create("warning", "manifest.file_unexpected", message, file=name))


# --- data files -----------------------------------------------------------------------------------


def _read_table(
    file_spec: spec.FileSpec, mode: str, raw: bytes, diagnostics: list[Diagnostic]
) -> pd.DataFrame | None:
    """The file as a table of the spec columns, or None when the file is unusable (fatal reported)."""
    records = _read_records(file_spec.file_name, raw, diagnostics)
    if records is None:
        return None
    if not records:
        return _without_rows(file_spec, mode, diagnostics)
    header = records[0][2]
    positions = _header_positions(file_spec, header, diagnostics)
    if positions is None:
        return None
    if len(records) == 1:
        return _without_rows(file_spec, mode, diagnostics)
    rows, lines = _data_rows(file_spec.file_name, len(header), records[1:], diagnostics)
    return _table(file_spec, len(header), positions, rows, lines)


def _without_rows(file_spec: spec.FileSpec, mode: str, diagnostics: list[Diagnostic]) -> pd.DataFrame | None:
    """A file without data rows: "nothing changed" in delta, but never "delete everyone" in bulk."""
    if mode == "bulk":
        message = "a bulk file must have at least one data row; declare the file absent to send nothing"
        diagnostics.append(Diagnostic.create("fatal", "file.empty", message, file=file_spec.file_name))
        return None
    message = "the delta file has no data rows (no changes)"
    diagnostics.append(Diagnostic.create("warning", "file.empty", message, file=file_spec.file_name))
    return _table(file_spec, len(file_spec.columns), list(range(len(file_spec.columns))), [], [])


def _header_positions(
    file_spec: spec.FileSpec, header: list[str], diagnostics: list[Diagnostic]
) -> list[int] | None:
    """Where each spec column sits in the header, or None when the header is unusable (fatal reported)."""
    name = file_spec.file_name
    counts = Counter(header)
    duplicated = [column for column in file_spec.columns if counts[column] > 1]
    missing = [column for column in file_spec.columns if column not in counts]
    for column in duplicated:
        message = f"the header names {column} {counts[column]} times"
        diagnostics.append(
            Diagnostic.create("fatal", "file.header_duplicate_column", message, file=name, line=1, column=column)
        )
    for column in missing:
        message = f"the header lacks the {column} column"
        diagnostics.append(
            Diagnostic.create("fatal", "file.header_missing_column", message, file=name, line=1, column=column)
        )
    if duplicated or missing:
        # Not reporting unknown names here: a headerless file would turn its first (personal) row into them.
        return None
    for column in counts:
        if column not in file_spec.columns and not column.startswith(EXTENSION_PREFIX):
            message = f"not a OneRoster 1.1 {name} column; ignored"
            diagnostics.append(
                Diagnostic.create("warning", "file.header_unknown_column", message, file=name, line=1, column=column)
            )
    if tuple(header[: len(file_spec.columns)]) != file_spec.columns:
        message = "the OneRoster columns are not first and in spec order; they were read by name"
        diagnostics.append(Diagnostic.create("warning", "file.header_order", message, file=name, line=1))
    return [header.index(column) for column in file_spec.columns]


def _data_rows(
    name: str, width: int, records: list[_Record], diagnostics: list[Diagnostic]
) -> tuple[list[list[str]], list[int]]:
    """Rows that map cell-for-cell onto the header, with their line numbers; the others are reported."""
    rows: list[list[str]] = []
    lines: list[int] = []
    trimmed: list[int] = []
    for first_line, last_line, cells in records:
        beyond_header = cells[width:]
        if last_line != first_line:
            message = f"a quoted cell spans lines {first_line}-{last_line}; line breaks are not allowed in cells"
            diagnostics.append(Diagnostic.create("error", "row.line_break", message, file=name, line=first_line))
        elif len(cells) < width or any(beyond_header):
            message = f"the row has {len(cells)} cells but the header has {width}"
            diagnostics.append(Diagnostic.create("error", "row.width", message, file=name, line=first_line))
        else:
            if beyond_header:
                trimmed.append(first_line)
            rows.append(cells[:width] if beyond_header else cells)
            lines.append(first_line)
    if trimmed:
        # One finding per file, not per row: a trailing comma on every row is a single export setting.
        message = f"{len(trimmed)} row(s) had empty cells beyond the header; removed them (first: line {trimmed[0]})"
        diagnostics.append(
            Diagnostic.create("fixed", "row.trailing_empty_cells", message, file=name, line=trimmed[0])
        )
    return rows, lines


def _table(
    file_spec: spec.FileSpec, width: int, positions: list[int], rows: list[list[str]], lines: list[int]
) -> pd.DataFrame:
    """Exactly the spec columns in spec order (extension columns dropped), as `str`, plus `_line`."""
    cells = pd.DataFrame(rows, columns=range(width), dtype="str")
    table = cells[positions].set_axis(list(file_spec.columns), axis="columns")
    table[LINE_COLUMN] = np.asarray(lines, dtype=np.int64)
    return table
