"""`python -m bench`: every benchmark in turn (root)."""

import importlib
import sys

SUITES = ["bench.sensors", "bench.attribution", "bench.transport", "bench.imagegate"]

for name in sys.argv[1:] or SUITES:
    try:
        mod = importlib.import_module(name)
    except ImportError as e:
        print(f"{name}: not available ({e})\n")
        continue
    print(f"== {name} ==")
    mod.main()
    print()
