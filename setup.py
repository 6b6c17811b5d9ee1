"""rostersync: keep an LMS in sync with districts' OneRoster rosters, built on Dagster."""

from setuptools import find_packages, setup

setup(
    name="rostersync",
    version="0.1.0",
    description="OneRoster SFTP/REST deliveries archived, validated, diffed and synced to an LMS with Dagster.",
    python_requires=">=3.11",
    packages=find_packages(include=["rostersync_assets", "rostersync_assets.*"]),
    package_data={"rostersync_assets": ["py.typed"]},
    install_requires=[
        # The Dagster line that installs together: the integration libraries pin core exactly.
        "dagster==1.13.27",
        "dagster-webserver==1.13.27",
        "dagster-aws==0.29.27",
        # pandas 3 with pandera directly (dagster-pandera caps pandas below 3).
        "pandas>=3,<4",
        "pandera>=0.35,<0.36",
        "pyarrow>=15",
        "paramiko>=3.4",
        "requests>=2.31",
        "pyyaml>=6",
        # The archive writes with IfNoneMatch (write-once on S3), which needs a 2024+ botocore.
        "boto3>=1.35",
        # The sandbox the demo runs against: an SFTP server and the LMS API (Starlette/uvicorn
        # already come with dagster-webserver; named here because our code imports them).
        "asyncssh>=2.14",
        "starlette>=0.37",
        "uvicorn>=0.29",
    ],
    extras_require={
        "dev": [
            "pytest>=8",
            # moto's server mode: a real S3 API over HTTP for the archive tests.
            "moto[s3,server]>=5",
        ],
    },
    entry_points={"console_scripts": ["rostersync=rostersync_assets.cli:main"]},
)
