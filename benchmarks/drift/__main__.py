import sys

from benchmarks.drift.run import main

sys.exit(main())
