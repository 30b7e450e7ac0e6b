"""spark-submit entry point; the job lives in fruitflow.featurize (shipped with --py-files)."""

import sys

from fruitflow.featurize import main

if __name__ == "__main__":
    sys.exit(main())
