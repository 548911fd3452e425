"""Installs the fault ``TEST_FAULT`` names in every interpreter of a fault run (see tests/faults.py).

Only the fault run puts this directory on ``PYTHONPATH``.
"""

import os
import sys

if os.environ.get("TEST_FAULT"):
    _repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    sys.path.insert(0, _repo)
    try:
        from tests import faults

        faults.install_from_env()
    finally:
        sys.path.remove(_repo)
