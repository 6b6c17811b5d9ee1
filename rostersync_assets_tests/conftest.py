"""Shared pytest configuration: the real servers the tests talk to are fixtures in `fixtures/`."""

pytest_plugins = [
    "rostersync_assets_tests.fixtures.sftp",
    "rostersync_assets_tests.fixtures.lms",
    "rostersync_assets_tests.fixtures.s3",
    "rostersync_assets_tests.fixtures.pipeline",
    "rostersync_assets_tests.fixtures.postgres",
]
