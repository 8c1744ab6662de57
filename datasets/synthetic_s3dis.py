#!/usr/bin/env python
"""Command line of the generator ``projects/oneformer3d/synthetic_s3dis.py`` (run from anywhere; see --help)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from projects.oneformer3d.synthetic_s3dis import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
