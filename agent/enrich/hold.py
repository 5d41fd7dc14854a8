"""Hold-for-container: events of a cgroup created moments ago wait briefly for their container.

The cgroup probe tells us a container's cgroup before its first process runs; containerd's task
event, which names the container, comes a few milliseconds later (more on a busy node). An event
of such a young cgroup that the container table cannot resolve yet is held here for up to
`hold_s` and resolved again on every release; when the hold runs out it goes out as
container.id=unknown (the cgroup path names a container) or as a host event.

Every way a hold ends is counted in `attribution` (exported as nodewarden_attribution_total):
resolved_after_hold, unknown, host_after_hold, held_overflow (the hold was full: the oldest
event went out early). The pipeline owns one Hold and calls it from its worker thread only.
"""

from __future__ import annotations

import time
from collections import Counter, deque

from agent.enrich.enricher import ContainerResolver
from agent.events import Enriched


class Hold:
    def __init__(self, resolver: ContainerResolver, hold_s: float = 0.5, max_events: int = 10000,
                 clock=time.monotonic):
        if max_events < 1:
            raise ValueError("the hold needs room for at least one event")
        self.resolver = resolver
        self.hold_s = hold_s
        self.max_events = max_events
        self._clock = clock
        self._held: deque[tuple[float, Enriched]] = deque()  # (deadline, event), oldest first
        self.attribution: Counter[str] = Counter()

    def __len__(self) -> int:
        return len(self._held)

    def wants(self, en: Enriched) -> bool:
        """True for an event without a container whose cgroup is young: its container may come."""
        return en.container is None and self.resolver.is_young(en.event.cgroup_id)

    def hold(self, en: Enriched) -> list[Enriched]:
        """Keep `en`; returns the oldest held event, decided now, when the hold was full."""
        out = []
        if len(self._held) >= self.max_events:
            self.attribution["held_overflow"] += 1
            out.append(self._decide(self._held.popleft()[1], True))
        self._held.append((self._clock() + self.hold_s, en))
        return out

    def release(self, now: float | None = None, force: bool = False) -> list[Enriched]:
        """The held events that resolve now, or whose hold is over (all of them when `force`), in the
        order they were held; the rest stay."""
        if not self._held:
            return []
        now = self._clock() if now is None else now
        out, keep = [], deque()
        for deadline, en in self._held:
            done = self._decide(en, force or now >= deadline)
            if done is None:
                keep.append((deadline, en))
            else:
                out.append(done)
        self._held = keep
        return out

    def _decide(self, en: Enriched, over: bool) -> Enriched | None:
        info = self.resolver.resolve(en.event)
        if info is not None:
            self.attribution["resolved_after_hold"] += 1
        elif over:
            info = self.resolver.fallback(en.event.cgroup_id)
            self.attribution["unknown" if info is not None else "host_after_hold"] += 1
        else:
            return None
        return Enriched(en.event, en.process, en.parent, info)
