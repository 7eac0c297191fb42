from setuptools import setup

# Test doubles of the accounting systems, a distribution of their own so the production package
# (b123_pipelines) never ships them. `make setup` installs it beside the dev extra.
setup(
    name="b123-emulators",
    version="0.1.0",
    description="Emulators of accounting systems' APIs for budget123's tests, demo and benchmarks",
    packages=["b123_emulators"],
    python_requires=">=3.11,<3.12",
    install_requires=[
        "cryptography>=42",  # the self-signed certificate of an HTTPS emulator
        "requests",
    ],
)
