"""The last safety verdict of each district, kept as JSON beside the tables.

`rostersync approve` must show what it releases (the held counts) and refuse to approve a delivery
that was never judged, without re-running the pipeline or reading a change set of millions of rows.
`roster_changes` therefore writes its verdict to `<home>/tables/safety_verdicts/<district>.json`
on every run (held or not); the file holds ids and counts only, never record contents.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rostersync_assets.sync.safety import SafetyPolicy, SafetyVerdict

VERDICTS_DIR = "safety_verdicts"


@dataclass(frozen=True)
class JudgedDelivery:
    """A district's most recently judged delivery: its verdict, the policy and the run that judged it."""

    district: str
    delivery_id: str
    run_id: str
    evaluated_at: str  # ISO 8601, UTC
    policy: SafetyPolicy
    verdict: SafetyVerdict

    def to_dict(self) -> dict[str, Any]:
        return {
            "district": self.district,
            "delivery_id": self.delivery_id,
            "run_id": self.run_id,
            "evaluated_at": self.evaluated_at,
            "policy": asdict(self.policy),
            "verdict": self.verdict.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JudgedDelivery:
        return cls(
            district=data["district"],
            delivery_id=data["delivery_id"],
            run_id=data["run_id"],
            evaluated_at=data["evaluated_at"],
            policy=SafetyPolicy(**data["policy"]),
            verdict=SafetyVerdict.from_dict(data["verdict"]),
        )


def approval_summary(verdict: SafetyVerdict) -> str:
    """What an approval releases, as the ledger keeps it: the holds (counts and sample ids only)."""
    return json.dumps({"holds": verdict.to_dict()["holds"]}, sort_keys=True)


def verdict_path(tables_dir: Path, district: str) -> Path:
    return tables_dir / VERDICTS_DIR / f"{district}.json"


def save_judged_delivery(
    tables_dir: Path, district: str, delivery_id: str, run_id: str, policy: SafetyPolicy, verdict: SafetyVerdict
) -> JudgedDelivery:
    """Replace the district's last verdict (atomically: a reader never sees half a file)."""
    judged = JudgedDelivery(district, delivery_id, run_id, datetime.now(UTC).isoformat(), policy, verdict)
    path = verdict_path(tables_dir, district)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(judged.to_dict(), indent=2, sort_keys=True), encoding="utf-8")
    tmp.replace(path)
    return judged


def load_judged_delivery(tables_dir: Path, district: str) -> JudgedDelivery | None:
    """The district's last verdict, or None when no change set was judged yet."""
    path = verdict_path(tables_dir, district)
    if not path.exists():
        return None
    return JudgedDelivery.from_dict(json.loads(path.read_text(encoding="utf-8")))
