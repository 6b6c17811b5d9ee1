"""Which reader a delivery needs: a zip or loose files, Clever's legacy format or OneRoster.

One dispatcher for every entry point (the nightly asset, `rostersync validate`), so a district's
files are always read the same way whatever command looks at them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from rostersync_assets.oneroster.clever import is_clever_package, read_clever_package
from rostersync_assets.oneroster.profile import STRICT, DistrictProfile
from rostersync_assets.oneroster.reader import RosterPackage, read_package, uninterpretable
from rostersync_assets.oneroster.rest_json import is_rest_delivery, read_rest_delivery
from rostersync_assets.oneroster.zipped import DEFAULT_MAX_UNCOMPRESSED, unzip_members


def read_files(files: Mapping[str, bytes], profile: DistrictProfile = STRICT) -> RosterPackage:
    """A package's top-level files (name -> bytes), in Clever's format or OneRoster's."""
    if is_clever_package(files):
        return read_clever_package(files, profile)
    return read_package(files, profile)


def read_package_zip(
    source: Path | bytes, profile: DistrictProfile = STRICT, *, max_uncompressed: int = DEFAULT_MAX_UNCOMPRESSED
) -> RosterPackage:
    """Read a zipped delivery (a path or the zip's bytes); never raises on bad data, it reports it."""
    diagnostics = []
    files = unzip_members(source, max_uncompressed, diagnostics)
    if files is None:
        return uninterpretable("", diagnostics)
    package = read_files(files, profile)
    package.diagnostics[:0] = diagnostics
    return package


def read_delivery(files: Mapping[str, bytes], profile: DistrictProfile = STRICT) -> RosterPackage:
    """A delivery as its SFTP folder held it (a single zip, opened in memory, or loose files) or as a
    OneRoster REST pull staged it (JSON pages and rest-pull.json)."""
    if is_rest_delivery(files):
        return read_rest_delivery(files, profile)
    if len(files) == 1:
        ((name, body),) = files.items()
        if name.lower().endswith(".zip"):
            return read_package_zip(body, profile)
    return read_files(files, profile)
