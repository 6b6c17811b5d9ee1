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
        # The change-set diff and content hashing run in DuckDB over the tables' Arrow buffers
        # (2.x: relations with to_arrow_table(), the `lambda x:` syntax).
        "duckdb>=2.0,<3",
        # The ledger: SQLAlchemy Core over SQLite or PostgreSQL (psycopg 3). Below 2.1 because
        # Dagster's own PostgreSQL storage (dagster-postgres) needs it there.
        "sqlalchemy>=2.0,<2.1",
        "psycopg[binary]>=3.1",
        # PostgreSQL's 8 M-row sync state is read straight into Arrow (binary COPY), not as Python rows.
        "adbc-driver-postgresql>=1.0",
        "paramiko>=3.4",
        # Fernet encrypts the home's secrets file (secret_refs.py); paramiko depends on it too.
        "cryptography>=42",
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
            "moto[s3,server]>=5",  # also serves Secrets Manager (test_secrets.py)
        ],
    },
    entry_points={"console_scripts": ["rostersync=rostersync_assets.cli:main"]},
)
