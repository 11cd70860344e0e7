import os
import sys

# `tests.reference` and `tests.specs` are imported as packages from the repo root.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
