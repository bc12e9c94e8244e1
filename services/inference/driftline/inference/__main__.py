"""`python -m driftline.inference`: serve the DynamicModel in $DRIFTLINE_INFERENCE_MODEL_FILE."""

import sys

from driftline.inference.server import main

if __name__ == "__main__":
    sys.exit(main())
