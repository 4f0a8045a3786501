"""``python -m backbone_lab.analyze <run_dir> [key=value ...]``: the default trajectory analysis.

Thin entry point; the logic is in :mod:`backbone_lab.analysis.cli`.
"""

import sys

from backbone_lab.analysis.cli import main

if __name__ == "__main__":
    sys.exit(main())
