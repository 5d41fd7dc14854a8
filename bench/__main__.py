"""`python -m bench [SUITE ...]`: every benchmark in turn (root), or the ones named."""

import importlib
import sys

SUITES = ["bench.sensors", "bench.attribution", "bench.transport", "bench.imagegate", "bench.detect", "bench.pipeline"]
SUITES.append("bench.hashdb")  # known-bad hash store: import, size, RSS, lookup (issue 11)
SUITES.append("bench.webshells")  # web-shell detector on the public corpus, tune split (issue 11)
SUITES.append("bench.devices")  # GPU poller: CPU per sample per device, added CPU at 8 devices x 1 s (issue 12)
SUITES.append("bench.devguard")  # device guard: per-file-event cost on the worker, judging cost (issue 12)
SUITES.append("bench.profiles")  # behaviour profiles: memory per profile, added cost per event (issue 13)
SUITES.append("bench.collector_scale")  # collector ingest: SQLite, PostgreSQL with 1 and 2 replicas (issue 14)
SUITES.append("bench.console")  # console query latency on 10 million stored events, first page < 300 ms (issue 14)
SUITES.append("bench.resources")  # resource sampler: CPU per container sample, psutil host sample (issue 16)
SUITES.append("bench.memory")  # the real agent's USS/RSS idle and under load, idle CPU, no LLVM mapped (issue 17)

names = sys.argv[1:] or SUITES
sys.argv = sys.argv[:1]  # each suite parses its own flags: run them with their defaults
for name in names:
    try:
        mod = importlib.import_module(name)
    except ImportError as e:
        print(f"{name}: not available ({e})\n")
        continue
    print(f"== {name} ==", flush=True)
    mod.main()
    print(flush=True)
