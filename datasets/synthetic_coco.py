#!/usr/bin/env python
"""Command line of the generator ``projects/mask2former/synthetic_coco.py`` (run from anywhere; see --help)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from projects.mask2former.synthetic_coco import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
