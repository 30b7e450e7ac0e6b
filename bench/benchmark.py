"""The benchmark's command line (`make bench`): what it measures, and which module measures what,
is in bench/fruitflow_bench/__init__.py; the results go to bench/results.md.

    python bench/benchmark.py [--sizes 250,500,1000,2000] [--marginal 1000,10000] [--raw-images 1000]
                              [--raw-threads 2] [--memory-images 10000] [--nightly-images 2000]
                              [--reference-images 1000]
                              [--skip-reference] [--wheelhouse DIR] [--output bench/results.md] [--workdir DIR]
"""

import sys

from fruitflow_bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
