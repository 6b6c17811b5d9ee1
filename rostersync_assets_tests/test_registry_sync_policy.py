"""The registry's `sync:` mapping: a district's safety limits and mode, validated and round-tripped."""

from pathlib import Path

import pytest
import yaml

from rostersync_assets.registry import District, DistrictRegistry, RegistryError, SftpSource
from rostersync_assets.sync.safety import SafetyPolicy

SOURCE = SftpSource(host="sftp.example.org", port=22, username="lincoln", remote_dir="/outgoing", host_key="ssh-ed25519 AAAAC3Nza", password_env="LINCOLN_SFTP_PASSWORD")


def registry_with(sync: object) -> str:
    entry = {"slug": "lincoln-usd", "sftp": {**SOURCE.__dict__}, "sync": sync}
    return yaml.safe_dump({"districts": [entry]})


def test_a_policy_round_trips_and_only_non_defaults_are_written(tmp_path):
    path = tmp_path / "districts.yaml"
    policy = SafetyPolicy(mode="preview", max_deactivated_share=0.05, min_school_size=50)
    DistrictRegistry({}).with_district(District("lincoln-usd", "Lincoln", "lincoln", SOURCE, sync=policy)).save(path)
    assert yaml.safe_load(path.read_text())["districts"][0]["sync"] == {"mode": "preview", "max_deactivated_share": 0.05, "min_school_size": 50}
    assert DistrictRegistry.load(path).get("lincoln-usd").sync == policy
    DistrictRegistry({}).with_district(District("lincoln-usd", "Lincoln", "lincoln", SOURCE)).save(path)
    assert "sync" not in yaml.safe_load(path.read_text())["districts"][0]
    assert DistrictRegistry.load(path).get("lincoln-usd").sync == SafetyPolicy()


@pytest.mark.parametrize(
    ("sync", "message"),
    [
        ({"mode": "dryrun"}, "district lincoln-usd: sync: mode 'dryrun' is not one of sync, preview"),
        ({"max_deactivated_share": 1.5}, "district lincoln-usd: sync: max_deactivated_share 1.5 must be a share between 0 and 1"),
        ({"max_updated_share": -0.1}, "district lincoln-usd: sync: max_updated_share -0.1 must be a share"),
        ({"min_school_size": 2.5}, "district lincoln-usd: sync: min_school_size 2.5 must be a whole number"),
        ({"max_id_churn": "none"}, "district lincoln-usd: sync: max_id_churn 'none' must be a share"),
        ({"max_deletions": 3}, "district lincoln-usd: sync: unknown field"),
        ("preview", "district lincoln-usd: sync: must be a mapping"),
    ],
)
def test_a_bad_policy_is_refused_naming_district_and_field(tmp_path, sync, message):
    path = tmp_path / "districts.yaml"
    path.write_text(registry_with(sync))
    with pytest.raises(RegistryError) as error:
        DistrictRegistry.load(path)
    assert str(error.value).startswith(message)


def test_the_example_registry_documents_the_defaults():
    example = DistrictRegistry.load(Path(__file__).resolve().parents[1] / "districts.example.yaml")
    assert example.get("lincoln-usd").sync == SafetyPolicy()
