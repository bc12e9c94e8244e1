"""Driftline against its peers, side by side in one run (`make bench`, `benchmarks.run`).

One module per workload (`http`, `cache`, `trainer`, `feedback`, `drift`), each
returning rows of Driftline, its floors and its peers measured alternately; the
peers' own servers live in `apps/` and run in venvs of their own (`peers`).
"""
