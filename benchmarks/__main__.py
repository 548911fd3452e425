"""``python -m benchmarks``: the throughput and latency table (see benchmarks/throughput.py)."""

import sys

from benchmarks.throughput import main

sys.exit(main())
