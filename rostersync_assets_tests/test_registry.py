"""The district registry: slugs validated, secrets only by reference, round trip through YAML."""

import pytest

from rostersync_assets.registry import District, DistrictRegistry, RegistryError, SftpSource, validate_slug

SOURCE = SftpSource(host="sftp.example.org", port=2222, username="lincoln", remote_dir="/outgoing", host_key="ssh-ed25519 AAAAC3Nza", password_env="LINCOLN_SFTP_PASSWORD")


@pytest.mark.parametrize("slug", ["lincoln-usd", "a1", "0district"])
def test_valid_slugs(slug):
    assert validate_slug(slug) == slug


@pytest.mark.parametrize("slug", ["", "a", "Lincoln", "-lead", "a|b", "a b", "x" * 64, "a/b"])
def test_invalid_slugs_are_refused(slug):
    with pytest.raises(RegistryError):
        validate_slug(slug)


def test_round_trip_and_example_file(tmp_path):
    registry = DistrictRegistry({}).with_district(District("lincoln-usd", "Lincoln", "lincoln", SOURCE))
    path = tmp_path / "districts.yaml"
    registry.save(path)
    assert DistrictRegistry.load(path) == registry
    assert "secret" not in path.read_text()


def test_example_registry_in_the_repository_loads():
    from pathlib import Path

    example = DistrictRegistry.load(Path(__file__).resolve().parents[1] / "districts.example.yaml")
    assert example.districts and all(d.sftp.host_key for d in example.districts.values() if d.sftp is not None)
    assert any(d.rest is not None for d in example.districts.values())


def test_credentials_come_from_the_named_environment_variable():
    creds = SOURCE.credentials({"LINCOLN_SFTP_PASSWORD": "s3cret"})
    assert creds.password == "s3cret" and "s3cret" not in repr(creds)
    with pytest.raises(RegistryError, match="LINCOLN_SFTP_PASSWORD"):
        SOURCE.credentials({})


def test_secret_in_the_registry_file_is_refused(tmp_path):
    path = tmp_path / "districts.yaml"
    path.write_text(
        "districts:\n- slug: lincoln-usd\n  sftp: {host: h, username: u, remote_dir: /o, host_key: k, password: hunter2}\n"
    )
    with pytest.raises(RegistryError, match="password_env") as error:
        DistrictRegistry.load(path)
    assert "hunter2" not in str(error.value)


def test_missing_registry_is_empty_and_unknown_district_is_named(tmp_path):
    registry = DistrictRegistry.load(tmp_path / "none.yaml")
    with pytest.raises(RegistryError, match="adams-isd"):
        registry.get("adams-isd")


def test_a_district_profile_round_trips_and_a_bad_one_names_the_district(tmp_path):
    from rostersync_assets.oneroster.profile import DistrictProfile

    profiled = District("lincoln-usd", "Lincoln", "lincoln", SOURCE, DistrictProfile(date_format="%m/%d/%Y", grade_map={"K": "KG"}))
    path = tmp_path / "districts.yaml"
    DistrictRegistry({}).with_district(profiled).save(path)
    assert DistrictRegistry.load(path).get("lincoln-usd").profile == profiled.profile
    path.write_text(path.read_text() + "    legacy_v1_O: true\n")
    with pytest.raises(RegistryError, match="lincoln-usd.*legacy_v1_O"):
        DistrictRegistry.load(path)
