"""The batch memo (Enricher.enrich_in_batch, and the compiled reader of its hits, _native.c from_memo) against
enrich() on random process lives: forks, execs, exits, reused pids, reparented children and events of pids
the table never saw, with batches of random length. An exec's and a fork's context go into the memo
(issue 17: the process's next event is then a hit); every event must still get what enrich() gives."""

from __future__ import annotations

import random

from agent.enrich.enricher import Enricher
from agent.enrich.proctable import ProcessTable
from agent.sensors import native
from agent.sensors.common import BootClock
from tests.unit.replay_records import PID, exec_rec, exit_rec, fork_rec, open_rec
from tests.unit.test_flatten_fragments import _DECODERS


def _life(rnd: random.Random, n: int) -> list[bytes]:
    pids = [PID + 9000 + k for k in range(8)]
    parent = {p: (pids[0] if p != pids[0] else 1) for p in pids}
    recs = []
    for _ in range(n):
        p = rnd.choice(pids)
        pp = parent[p] if rnd.random() < 0.9 else rnd.choice(pids)  # now and then the kernel's parent differs
        what = rnd.random()
        if what < 0.15:
            child = rnd.choice(pids)
            if child != p:
                parent[child] = p
                recs.append(fork_rec(child, pid=p, ppid=parent[p]))
        elif what < 0.3:
            recs.append(exec_rec(f"/bin/x{rnd.randrange(4)}", ["x", str(rnd.randrange(3))], pid=p, ppid=pp))
        elif what < 0.37:
            recs.append(exit_rec(0, pid=p, ppid=pp))
        else:
            recs.append(open_rec(f"/tmp/{rnd.randrange(5)}", pid=p, ppid=pp))
    return recs


def test_the_memo_gives_what_enrich_gives():
    clock = BootClock()
    from_memo = native.MODULE.from_memo if native.MODULE is not None else None
    hits = 0
    for seed in range(200):
        rnd = random.Random(seed)
        evs = [_DECODERS[r[0]](r, clock) for r in _life(rnd, 300)]
        a, b = Enricher(ProcessTable(ancestry_max=4)), Enricher(ProcessTable(ancestry_max=4))
        memo: dict = {}
        left = rnd.randrange(1, 60)
        for ev in evs:
            left -= 1
            if left == 0:
                memo, left = {}, rnd.randrange(1, 60)  # a new batch
            want = a.enrich(ev)
            got = from_memo(memo, ev) if from_memo is not None else None
            hits += got is not None
            if got is None:
                got = b.enrich_in_batch(ev, memo)
            assert got == want, (seed, ev)
    assert from_memo is None or hits > 1000
