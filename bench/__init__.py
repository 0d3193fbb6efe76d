"""Benchmarks that print figures (not tests). Run from the repo root: `python -m bench.NAME`."""
