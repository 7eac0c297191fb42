"""Benchmarks of the sync against its floors and against dlt: `python -m benchmarks.run` (see run.py).

Benchmarks report, they do not pass or fail: the figures go in benchmarks/RESULTS.md.
"""
