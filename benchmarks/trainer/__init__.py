"""Benchmarks of the online trainer: throughput, time to a candidate, learning quality."""
