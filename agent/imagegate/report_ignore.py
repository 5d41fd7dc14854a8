"""`.nodewardenignore`: findings a team has accepted, in Trivy's `.trivyignore` line format.

One entry a line; `#` starts a comment. The first word is what to ignore: an advisory id, one of
its aliases (a CVE id), or a rule (`osv:GHSA-...`, a YARA rule, a baseline check id); `*` is any.
Further words, as Trivy writes them: `exp:YYYY-MM-DD` (the entry stops applying after that day, so
an accepted risk comes back to be looked at) and `path:GLOB` (only findings in files matching the
glob; repeatable). An expired entry is reported once on stderr and ignored.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
from dataclasses import dataclass, field

from agent.events import Finding
from agent.imagegate.report_common import all_ids

_MAX_BYTES = 1 << 20
_MAX_ENTRIES = 10_000


class IgnoreError(ValueError):
    """The ignore file cannot be used (one line, for the user)."""


@dataclass(frozen=True)
class Entry:
    id: str
    expires: dt.date | None = None
    paths: tuple[str, ...] = ()
    line: int = 0


@dataclass
class IgnoreList:
    entries: list[Entry] = field(default_factory=list)
    expired: list[Entry] = field(default_factory=list)

    def matches(self, f: Finding) -> Entry | None:
        ids = set(all_ids(f))
        path = f.path.lstrip("/")
        for e in self.entries:
            if e.id != "*" and e.id not in ids:
                continue
            if e.paths and not any(fnmatch.fnmatchcase(path, g.lstrip("/")) for g in e.paths):
                continue
            return e
        return None


def parse(text: str, where: str = ".nodewardenignore", today: dt.date | None = None) -> IgnoreList:
    today = today or dt.datetime.now(dt.UTC).date()
    out = IgnoreList()
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        exp, paths = None, []
        for w in words[1:]:
            key, _, val = w.partition(":")
            if key == "exp":
                try:
                    exp = dt.date.fromisoformat(val)
                except ValueError:
                    raise IgnoreError(f"{where}:{n}: bad expiry date {val!r} (want exp:YYYY-MM-DD)") from None
            elif key == "path" and val:
                paths.append(val)
            else:
                raise IgnoreError(f"{where}:{n}: unknown word {w!r} (want exp:YYYY-MM-DD or path:GLOB)")
        e = Entry(words[0], exp, tuple(paths), n)
        (out.expired if exp is not None and exp < today else out.entries).append(e)
        if len(out.entries) + len(out.expired) > _MAX_ENTRIES:
            raise IgnoreError(f"{where}: more than {_MAX_ENTRIES} entries")
    return out


def load(path: str, today: dt.date | None = None) -> IgnoreList:
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_BYTES + 1)
    except OSError as e:
        raise IgnoreError(f"{path}: {e.strerror or e}") from None
    if len(data) > _MAX_BYTES:
        raise IgnoreError(f"{path}: larger than {_MAX_BYTES} bytes")
    try:
        text = data.decode()
    except UnicodeDecodeError:
        raise IgnoreError(f"{path}: not UTF-8 text") from None
    return parse(text, path, today)
