"""spark-submit entry point; the job lives in fruitflow.export_csv (shipped with --py-files)."""

import sys

from fruitflow.export_csv import main

if __name__ == "__main__":
    sys.exit(main())
