"""`python -m src.study [study=<preset>] [study.<key>=<value> ...] [run overrides]`: which schedule wins, and how
sure: each schedule's lr tuned, then every schedule confirmed over paired seeds, and the verdict written into the
study folder; `study.dir=<folder>` continues a stopped study. `--help` for the rest; the logic is src/analysis/study/.
"""

import sys

from src.analysis.study.run import main

if __name__ == "__main__":
    sys.exit(main())
