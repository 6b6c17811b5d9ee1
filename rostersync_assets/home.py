"""Where one rostersync installation keeps its state, so every command agrees on the same files.

One home folder (`--home DIR`, else `ROSTERSYNC_HOME`, else `./.rostersync`) holds the district
registry, the Dagster instance (`DAGSTER_HOME`), staged downloads, the local archive, validated
tables, the ledger with the sync state, and the sandbox servers' data.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "ROSTERSYNC_HOME"
DEFAULT_HOME = Path(".rostersync")
# The instance configuration committed at the top of the repository (SQLite storage, concurrency).
INSTANCE_CONFIG = Path(__file__).resolve().parents[1] / "dagster.yaml"


@dataclass(frozen=True)
class RostersyncHome:
    """The folder layout of one installation; all paths derive from `root`."""

    root: Path

    @classmethod
    def resolve(cls, home: str | os.PathLike[str] | None = None) -> RostersyncHome:
        """The home named on the command line, else in the environment, else `./.rostersync`."""
        chosen = home or os.environ.get(HOME_ENV) or DEFAULT_HOME
        return cls(Path(chosen).expanduser().resolve())

    @property
    def registry_path(self) -> Path:
        return self.root / "districts.yaml"

    @property
    def dagster_home(self) -> Path:
        return self.root / "dagster"

    @property
    def staging_dir(self) -> Path:
        return self.root / "staging"

    @property
    def archive_dir(self) -> Path:
        return self.root / "archive"

    @property
    def tables_dir(self) -> Path:
        return self.root / "tables"

    @property
    def ledger_path(self) -> Path:
        return self.root / "ledger.db"

    @property
    def sandbox_dir(self) -> Path:
        return self.root / "sandbox"

    @property
    def lms_db_path(self) -> Path:
        return self.sandbox_dir / "lms.db"

    @property
    def sftp_root(self) -> Path:
        return self.sandbox_dir / "sftp"

    @property
    def sftp_host_key_path(self) -> Path:
        return self.sandbox_dir / "sftp_host_key"

    def ensure(self) -> RostersyncHome:
        """Create the folders and the Dagster instance config (copied once, never overwritten)."""
        for path in (self.dagster_home, self.staging_dir, self.archive_dir, self.tables_dir, self.sandbox_dir):
            path.mkdir(parents=True, exist_ok=True)
        instance_config = self.dagster_home / "dagster.yaml"
        if not instance_config.exists():
            if not INSTANCE_CONFIG.exists():
                raise FileNotFoundError(
                    f"{INSTANCE_CONFIG} is missing: install rostersync from its repository with "
                    "`pip install -e .` so the instance configuration is found"
                )
            shutil.copyfile(INSTANCE_CONFIG, instance_config)
        return self

    def environment(self) -> dict[str, str]:
        """Environment variables that point Dagster and rostersync's resources at this home."""
        return {HOME_ENV: str(self.root), "DAGSTER_HOME": str(self.dagster_home)}
