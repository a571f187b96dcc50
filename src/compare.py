"""`python -m src.compare <folder> [--target-acc A] [--out DIR]`: the runs below a sweep folder (or all of outputs/)
side by side, as summary.md, summary.csv and figures; `--help` for the rest. The logic is src/analysis/compare.py.
"""

import sys

from src.analysis.compare import main

if __name__ == "__main__":
    sys.exit(main())
