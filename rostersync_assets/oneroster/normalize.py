"""Normalising a district's values before they are judged: certain fixes applied, each one reported.

Placeholder contract (filled in by the profile/normalisation work): the reader calls
`normalize_header` for every file's header and `normalize_table` for every table it builds.
"""

from __future__ import annotations

import pandas as pd

from rostersync_assets.oneroster.diagnostics import Diagnostic
from rostersync_assets.oneroster.profile import DistrictProfile


def normalize_header(file_name: str, header: list[str], profile: DistrictProfile) -> tuple[list[str], list[Diagnostic]]:
    """The header with profile aliases (and certain case fixes) applied, and a diagnostic per change."""
    return list(header), []


def normalize_table(
    entity: str, file_name: str, table: pd.DataFrame, profile: DistrictProfile
) -> tuple[pd.DataFrame, list[Diagnostic]]:
    """The table with certain value fixes applied (column-wise), and a diagnostic per kind of fix."""
    return table, []
