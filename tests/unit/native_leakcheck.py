"""`python -m tests.unit.native_leakcheck [--records N] [--mode mix|malformed|both]`: a leak check of the
compiled hot path (agent/sensors/_native.c) in one process. It feeds N records through the real worker
stage (Pipeline._process, the bundled rules on, the JSON log to /dev/null and the exporter beside it, its
spool in a temporary directory, read back and acked: both compiled encoders run) and prints the resident set size
after each million: a reference leaked per record (an event, a string, a fragment) shows as RSS that
keeps climbing by tens of MB per million; flat after the first million (caches and tables filled) is
the pass. `mix` is bench/pipeline.py's replay mix over a fixed set of pids (forks and exits churn the
process table, which stays bounded); `malformed` is the error path: random bytes under each kind's op,
truncated records and wild length fields, each a decode error the pipeline counts, plus the decoders,
from_memo and json_line called directly on them. Exits 1 when RSS grew more than --max-growth MB from
the end of the first million to the end (16 by default: the malformed records' new process contexts fill
and clear the four bounded fragment caches, 8 MB each, so RSS swings within that; a leak of one reference
a record is hundreds of MB). tests/unit/test_native_hostile.py runs a short one."""

from __future__ import annotations

import argparse
import os
import random
import struct
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def mix_batches(batch: int) -> list[list[bytes]]:
    from bench.pipeline import _round

    recs: list[bytes] = []
    for k in range(40):  # 40 fixed pid ranges, cycled: the same processes come and go
        recs += _round(20_000 + 1_000 * k)
    return [recs[i:i + batch] for i in range(0, len(recs), batch)]


def malformed(rng: random.Random, n: int) -> list[bytes]:
    """Records a replay file or a fuzzer could hand the decoders: every kind's op, any length."""
    from agent.events import Op
    from agent.sensors.abi import EXEC_EVENT, FILE_EVENT, NET_EVENT

    ops = [int(op) for op in Op]
    sizes = (0, 1, 63, 64, 71, 72, 200, 223, 224, 615, 616, 1375, 1376, 1903, 1904, 2100)
    out = []
    for _ in range(n):
        size = rng.choice(sizes) if rng.random() < 0.7 else rng.randrange(0, 2200)
        raw = bytearray(rng.randbytes(size))
        if size:
            raw[0] = rng.choice(ops)
        if size >= 48:  # a bounded set of pids and cgroups: random ones would grow the process table (its own cap)
            struct.pack_into("<III", raw, 4, *(rng.randrange(30_000, 30_400) for _ in range(3)))
            struct.pack_into("<QQ", raw, 32, rng.choice((1, 7001, 99)), rng.choice((4026531840, 4026532999)))
        if size >= FILE_EVENT.size and rng.random() < 0.5:  # wild lengths: the decoder must clamp them
            struct.pack_into("<II", raw, FILE_EVENT.offsets["path_len"], rng.choice((0, 255, 256, 257, 2**32 - 1)),
                             rng.getrandbits(32))
        if size >= NET_EVENT.size and raw and raw[0] >= 20 and rng.random() < 0.5:
            struct.pack_into("<HH", raw, NET_EVENT.offsets["addr_len"] - 2, rng.getrandbits(16),
                             rng.choice((0, 1, 2, 8, 24, 110, 128, 129, 65535)))
        if size >= EXEC_EVENT.offsets["exe_flags"] and rng.random() < 0.3:
            struct.pack_into("<II", raw, EXEC_EVENT.offsets["filename_len"], rng.getrandbits(32),
                             rng.choice((0, 1, 1023, 1024, 1025, 2**32 - 1)))
        out.append(bytes(raw))
    return out


def direct(mod, recs: list[bytes], clock, memo: dict) -> None:
    """Each decoder on each record, and from_memo / json_line / flatten on what decodes."""
    for raw in recs:
        for dec in (mod.decode_file, mod.decode_net, mod.decode_exec, mod.decode_fork, mod.decode_exit):
            try:
                ev = dec(raw, clock)
            except Exception:
                continue
            en = mod.from_memo(memo, ev)
            if en is not None:
                mod.json_line(en)
                mod.flatten(en)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="tests.unit.native_leakcheck", description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=3_000_000)
    ap.add_argument("--mode", choices=("mix", "malformed", "both"), default="both")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--step", type=int, default=1_000_000, help="records between RSS lines")
    ap.add_argument("--max-growth", type=float, default=16.0, help="MB allowed after the first step")
    args = ap.parse_args(argv)

    from agent.sensors import native
    from bench.pipeline import _Export, _pipeline, _prologue

    mod = native.MODULE  # None (NODEWARDEN_NATIVE=0): the Python reference, to compare its RSS with
    print(f"native: {mod.__file__ if mod is not None else native.STATUS}")
    failed = False
    for mode in (("mix", "malformed") if args.mode == "both" else (args.mode,)):
        rng = random.Random(17)
        with open(os.devnull, "wb") as devnull, tempfile.TemporaryDirectory(prefix="nw-leak-spool-") as tmp:
            # the JSON log and the exporter (the agent with a collector): both compiled encoders run
            export = _Export(tmp, ack=True)
            p = _pipeline(True, devnull, export=export)
            p._process(_prologue(20_000))
            if mode == "mix":
                batches = mix_batches(args.batch)
            else:
                bad = malformed(rng, 64 * args.batch)
                batches = [bad[i:i + args.batch] for i in range(0, len(bad), args.batch)]
            done, next_line, first, memo = 0, args.step, None, {}
            while done < args.records:
                for batch in batches:
                    p._process(batch)
                    export.drain()
                    if mod is not None and mode == "malformed" and done % (16 * args.batch) == 0:
                        direct(mod, batch, p.clock, memo)
                    done += len(batch)
                    if done >= next_line:
                        now = rss_mb()
                        first = now if first is None else first
                        grown = now - first
                        print(f"{mode}: {done:>10,} records  RSS {now:7.1f} MB  (+{grown:.1f} since the first step)",
                              flush=True)
                        next_line += args.step
                    if done >= args.records:
                        break
            growth = rss_mb() - (first if first is not None else rss_mb())
            drops = sum(n for k, n in p.drop_totals().items() if not k.startswith("detect."))
            print(f"{mode}: {done:,} records, {p.delivered:,} delivered, {drops:,} dropped (counted); "
                  f"RSS growth after the first step {growth:+.1f} MB (allowed {args.max_growth})")
            failed |= growth > args.max_growth
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
