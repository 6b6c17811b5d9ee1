"""Open a delivery that arrives as a zip, in memory and defensively, without ever extracting it to disk.

A zip is untrusted input: entry names may climb out of the archive (zip-slip), hide files in folders
the reader would never look at, repeat a name, or declare (or secretly hold) gigabytes of output.
Every one of those rejects the package before any CSV is parsed (REFERENCE P1, §15 "Package").
"""

from __future__ import annotations

import io
import re
import zipfile
from pathlib import Path

from rostersync_assets.oneroster.diagnostics import Diagnostic

# Far above any real district (1M students, 8M enrollments is about 1.5 GB of CSV), far below a bomb.
DEFAULT_MAX_UNCOMPRESSED = 4 * 1024**3
_READ_CHUNK = 1 << 20
_DRIVE = re.compile(r"^[A-Za-z]:")


def unzip_members(source: Path | bytes, limit: int, diagnostics: list[Diagnostic]) -> dict[str, bytes] | None:
    """File name -> bytes of every zip entry, or None when the archive is unsafe or unreadable (fatal)."""
    try:
        with zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source) as archive:
            entries = archive.infolist()
            if not _safe(entries, limit, diagnostics):
                return None
            return _read_entries(archive, entries, limit, diagnostics)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, RuntimeError, NotImplementedError, OSError, EOFError) as exc:
        # Messages name the archive's structure (bad CRC, encryption), never file contents.
        message = f"the zip cannot be read: {type(exc).__name__}: {exc}"
        diagnostics.append(Diagnostic.create("fatal", "package.zip_invalid", message))
        return None


def _safe(entries: list[zipfile.ZipInfo], limit: int, diagnostics: list[Diagnostic]) -> bool:
    """Names at the root, each once, and a declared total within the limit."""
    seen: set[str] = set()
    for entry in entries:
        name = entry.filename
        if name.startswith("/") or "\\" in name or _DRIVE.match(name) or ".." in name.split("/"):
            diagnostics.append(Diagnostic.create("fatal", "package.zip_unsafe_name", "unsafe entry name", file=name))
        elif "/" in name:
            message = "files must sit at the zip root, not in a folder"
            diagnostics.append(Diagnostic.create("fatal", "package.zip_subdirectory", message, file=name))
        elif name in seen:
            message = "the zip holds two entries with this name"
            diagnostics.append(Diagnostic.create("fatal", "package.zip_duplicate_name", message, file=name))
        seen.add(name)
    declared = sum(entry.file_size for entry in entries)
    if declared > limit:
        message = f"the entries declare {declared} bytes uncompressed; the limit is {limit}"
        diagnostics.append(Diagnostic.create("fatal", "package.zip_too_large", message))
    return not any(d.severity == "fatal" for d in diagnostics)


def _read_entries(
    archive: zipfile.ZipFile, entries: list[zipfile.ZipInfo], limit: int, diagnostics: list[Diagnostic]
) -> dict[str, bytes] | None:
    """The entries' bytes, stopping as soon as more than `limit` bytes came out (a lying header)."""
    files: dict[str, bytes] = {}
    budget = limit
    for entry in entries:
        chunks = []
        with archive.open(entry) as stream:
            while chunk := stream.read(min(_READ_CHUNK, budget + 1)):
                budget -= len(chunk)
                if budget < 0:
                    message = f"the entries unpack to more than the limit of {limit} bytes"
                    diagnostics.append(Diagnostic.create("fatal", "package.zip_too_large", message, file=entry.filename))
                    return None
                chunks.append(chunk)
        files[entry.filename] = b"".join(chunks)
    return files
