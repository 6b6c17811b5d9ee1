"""Storage of what assets hand to each other: DataFrames as Parquet, small descriptors as JSON.

Files are readable by people and other tools (no pickle): `<base>/<asset key>/<district>.parquet`.
A DataFrame's `attrs` (manifest mode, delivery id) travel inside the Parquet metadata.
"""


import json
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd


class RosterIOManager(dg.ConfigurableIOManager):
    """Parquet for tables, JSON for descriptors, one file per asset and district partition."""

    base_path: str

    def _path(self, asset_key: dg.AssetKey, partition: str, suffix: str) -> Path:
        return Path(self.base_path).joinpath(*asset_key.path, f"{partition}{suffix}")

    def handle_output(self, context: dg.OutputContext, obj: Any) -> None:
        suffix = ".parquet" if isinstance(obj, pd.DataFrame) else ".json"
        path = self._path(context.asset_key, context.asset_partition_key, suffix)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        if isinstance(obj, pd.DataFrame):
            obj.to_parquet(tmp, index=False)
        else:
            tmp.write_text(json.dumps(obj, indent=2, sort_keys=True), encoding="utf-8")
        tmp.replace(path)
        context.add_output_metadata({"path": dg.MetadataValue.path(str(path))})

    def load_input(self, context: dg.InputContext) -> Any:
        key, partition = context.asset_key, context.asset_partition_key
        parquet = self._path(key, partition, ".parquet")
        if parquet.exists():
            return pd.read_parquet(parquet)
        return json.loads(self._path(key, partition, ".json").read_text(encoding="utf-8"))
