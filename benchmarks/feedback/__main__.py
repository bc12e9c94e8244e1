import sys

from benchmarks.feedback.run import main

sys.exit(main())
