"""Hold-for-container: events of a cgroup created moments ago wait briefly for their container.

The cgroup probe tells us a container's cgroup before its first process runs; containerd's task
event, which names the container, comes a few milliseconds later (more on a busy node). An event
of such a young cgroup that the container table cannot resolve yet is held here for up to
`hold_s` and resolved again on every release; when the hold runs out it goes out as
container.id=unknown (the cgroup path names a container) or as a host event.

Every way a hold ends is counted in `attribution` (exported as nodewarden_attribution_total):
resolved_after_hold, unknown, host_after_hold, held_overflow (the hold was full: the oldest
event went out early). The pipeline owns one Hold and calls it from its worker thread only.

The deadline alone is not enough on a busy node: containerd's events then reach the watcher
later than `hold_s` after the cgroup appears (measured: 2 events of one of 50 short-lived
containers went out as unknown under `stress-ng --cpu 4` on 2 cores, with the watcher still
applying a backlog). So past its deadline an event stays held while the watcher is behind
(events queued or being applied: its description of the container may be among them), up to
`max_hold_s`; an idle watcher has told us all it will, and the event goes at its deadline.
"""

from __future__ import annotations

import time
from collections import Counter, deque

from agent.enrich.enricher import ContainerResolver
from agent.events import Enriched


class Hold:
    def __init__(self, resolver: ContainerResolver, hold_s: float = 0.5, max_events: int = 10000,
                 max_hold_s: float | None = None, clock=time.monotonic):
        if max_events < 1:
            raise ValueError("the hold needs room for at least one event")
        self.resolver = resolver
        self.hold_s = hold_s
        self.max_hold_s = max(hold_s, 10 * hold_s if max_hold_s is None else max_hold_s)
        self.max_events = max_events
        self._clock = clock
        self._held: deque[tuple[float, float, Enriched]] = deque()  # (deadline, cap, event), oldest first
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
            out.append(self._decide(self._held.popleft()[2], True))
        now = self._clock()
        self._held.append((now + self.hold_s, now + self.max_hold_s, en))
        return out

    def release(self, now: float | None = None, force: bool = False) -> list[Enriched]:
        """The held events that resolve now, or whose hold is over (all of them when `force`), in the
        order they were held; the rest stay."""
        if not self._held:
            return []
        now = self._clock() if now is None else now
        behind = None  # asked once per release, and only when some deadline has passed
        out, keep = [], deque()
        for item in self._held:
            deadline, cap, en = item
            over = force or now >= cap
            if not over and now >= deadline:
                if behind is None:
                    behind = self.resolver.behind()
                over = not behind
            done = self._decide(en, over)
            if done is None:
                keep.append(item)
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
