"""spark-submit entry point; the job lives in fruitflow.pca (shipped with --py-files)."""

import sys

from fruitflow.pca import main

if __name__ == "__main__":
    sys.exit(main())
