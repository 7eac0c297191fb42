"""Test doubles of the accounting systems' APIs, for tests, the demo and the benchmarks: never
imported by the production package. See ../README.md."""
