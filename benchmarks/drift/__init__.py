"""Drift detection benchmark: Driftline's detectors beside River's on the same streams.

Run from the repository root: `nice python -m benchmarks.drift` (add `--quick` for a
short smoke run). Writes `benchmarks/results/drift.md` and `drift.json`.
"""
