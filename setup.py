from setuptools import find_packages, setup

setup(
    name="b123_pipelines",
    version="0.1.0",
    description="budget123's accounting-data sync: a Dagster code location",
    packages=find_packages(exclude=["b123_pipelines_tests*", "benchmarks*"]),
    package_data={"b123_pipelines": ["instance/*.yaml", "migrations/script.py.mako", "migrations/versions/*.py"]},
    python_requires=">=3.11,<3.12",
    install_requires=[
        # dagster, dagster-webserver and dagster-postgres move together: a mismatch makes pip
        # fall back to an ancient dagster-postgres.
        "dagster==1.13.27",
        "dagster-webserver==1.13.27",
        "dagster-postgres==0.29.27",
        "psycopg2-binary>=2.9",
        # 2.1 makes psycopg 3 the default postgresql driver; dagster-postgres builds plain
        # postgresql:// URLs for psycopg2, so stay on 2.0.
        "SQLAlchemy>=2.0,<2.1",
        # Schema migrations: the warehouse tables change only through a revision (b123 db upgrade).
        "alembic>=1.13",
        "pandas",
        "requests",
        # Fernet: authenticated encryption of stored credentials, not hand-rolled crypto.
        "cryptography>=42",
        # Progress bar for the CLI's live log.
        "tqdm>=4.66",
        # Business Central's Entra ID tokens: Microsoft's own client for them, with its token cache
        # and renewal before expiry (connectors/kit/auth.py OAuth2ClientCredentials).
        "msal>=1.28",
        # JSON pages decoded from the bytes with exact Decimals, about 3x faster than json.loads with
        # parse_float=Decimal: a first sync of a million entries reads a gigabyte of JSON.
        "msgspec>=0.18",
    ],
    extras_require={
        # Production on Kubernetes (deploy/): the K8s run launcher, which the run worker pods load from
        # the instance config too, so the user-code image has it (`pip install ".[deploy]"`).
        "deploy": ["dagster-k8s==0.29.27"],
        # The emulators (test doubles, ./emulators) are a distribution of their own, never a
        # dependency of this package: the Makefile installs them beside this extra. dagster-k8s
        # too, so test_deploy.py loads the production instance config with the K8s run launcher.
        # pytest-xdist: the suite on both cores (make test), 13 min instead of about 20.
        "dev": ["pytest>=8", "pytest-timeout>=2.3", "pytest-xdist>=3.5", "dagster-k8s==0.29.27"],
        "bench": ["dlt[postgres]==1.31.0", "psutil>=5.9", "py-spy>=0.4"],
    },
    entry_points={"console_scripts": ["b123 = b123_pipelines.cli:main"]},
)
