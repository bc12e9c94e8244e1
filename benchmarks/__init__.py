"""Driftline benchmarks: each part measures itself against its floors, side by side."""
