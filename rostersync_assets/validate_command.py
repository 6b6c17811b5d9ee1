"""`rostersync validate PATH`: judge a delivery on a laptop before it is ever sent, with the nightly rules.

A district IT admin runs this on the export they are about to upload, so it must read exactly what
the nightly sync reads (same reader, validator and district profile) and say what to fix in their
terms. It is a boundary: bad input (a missing path, a broken profile, any bytes in the delivery)
gives a message and an exit code, never a stack trace. An exception from the reading code itself is
a rostersync bug, not bad input: it is reported as an internal error (exit 1) with where it happened
in rostersync's code, never with the data that triggered it.

Exit codes: 0 accepted (warnings, fixes and rejected rows allowed), 1 rejected or internal error,
2 usage error.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import TextIO

import yaml

from rostersync_assets.oneroster.formats import read_files, read_package_zip
from rostersync_assets.oneroster.profile import STRICT, DistrictProfile, ProfileError
from rostersync_assets.oneroster.report import format_human, summarize
from rostersync_assets.oneroster.validate import ValidationReport, validate_package

PROG = "rostersync validate"
ACCEPTED, REJECTED, USAGE_ERROR = 0, 1, 2
_PACKAGE_DIR = Path(__file__).resolve().parent


class UsageError(Exception):
    """The command line names something that cannot be used; the message says what and why."""


def run_validate(path: Path, *, as_json: bool, profile_path: Path | None, out: TextIO, err: TextIO) -> int:
    """Validate the delivery at `path` and write the report to `out`; returns the exit code.

    `as_json` writes `report.summarize` as one JSON document instead of the human report.
    """
    try:
        profile = _load_profile(profile_path)
        delivery = _delivery(path)
    except UsageError as error:
        print(f"{PROG}: {error}", file=err)
        return USAGE_ERROR
    try:
        report = _validate(delivery, profile)
        text = json.dumps(summarize(report)) + "\n" if as_json else format_human(report)
    except Exception as error:  # noqa: BLE001 - the boundary: a bug must not look like a verdict or a traceback
        print(f"{PROG}: internal error while reading {path} ({_where(error)}); please report it", file=err)
        return REJECTED
    out.write(text)
    return ACCEPTED if report.accepted else REJECTED


def _load_profile(profile_path: Path | None) -> DistrictProfile:
    """The district profile from `--profile`, or the strict defaults the nightly sync uses without one."""
    if profile_path is None:
        return STRICT
    try:
        return DistrictProfile.load(profile_path)
    except OSError as error:
        raise UsageError(f"cannot read the profile {profile_path}: {error.strerror}") from error
    except UnicodeDecodeError as error:
        raise UsageError(f"the profile {profile_path} is not UTF-8 text") from error
    except yaml.YAMLError as error:
        # PyYAML's messages quote the offending line, which could hold a district's value; give its position only.
        mark = getattr(error, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise UsageError(f"the profile {profile_path} is not valid YAML{at}") from error
    except ProfileError as error:
        raise UsageError(f"the profile {profile_path} is invalid: {error}") from error


def _delivery(path: Path) -> Path | dict[str, bytes]:
    """A zip's path (the zip reader reports damaged archives itself), or a folder's top-level files.

    Only top-level files belong to a package (REFERENCE P1). Reading them here, before the
    internal-error boundary, lets an unreadable file be a usage error rather than a crash.
    """
    if not path.exists():
        raise UsageError(f"{path} does not exist")
    if path.is_file() and path.suffix.lower() == ".zip":
        return path
    if not path.is_dir():
        raise UsageError(f"{path} is neither a delivery folder nor a .zip file")
    try:
        return {item.name: item.read_bytes() for item in sorted(path.iterdir()) if item.is_file()}
    except OSError as error:
        raise UsageError(f"cannot read {error.filename or path}: {error.strerror}") from error


def _validate(delivery: Path | dict[str, bytes], profile: DistrictProfile) -> ValidationReport:
    """Read and judge the delivery exactly as the nightly sync does (a Clever upload is converted first)."""
    package = read_package_zip(delivery, profile) if isinstance(delivery, Path) else read_files(delivery, profile)
    return validate_package(package, profile=profile)


def _where(error: Exception) -> str:
    """`KeyError at reader.py:123`: enough to find the bug, and free of the data (messages may quote cells).

    The location is the innermost rostersync frame: a line inside pandas says little about which of our calls failed.
    """
    frames = traceback.extract_tb(error.__traceback__)
    ours = [frame for frame in frames if _PACKAGE_DIR in Path(frame.filename).parents] or frames
    location = f" at {Path(ours[-1].filename).name}:{ours[-1].lineno}" if ours else ""
    return f"{type(error).__name__}{location}"
