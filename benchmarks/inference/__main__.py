"""`python -m benchmarks.inference`: see `benchmarks.inference.run`."""

from benchmarks.inference.run import main

main()
