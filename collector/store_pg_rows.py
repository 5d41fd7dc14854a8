"""The PostgreSQL store's pure half (collector/store_pg.py): checking a batch and building its rows,
the filters' SQL for its schema, its URL. Nothing here holds a connection."""

from __future__ import annotations

import threading

from collector.filters import EventFilter
from collector.store import _DECIDED, _DEVICE, _MAX_NAMES, _MAX_SEQ, BatchError, _decided, _device_text


def _t(s: str | None) -> str | None:
    """PostgreSQL text cannot hold NUL; the body (bytea) keeps the event as sent."""
    return s.replace("\x00", "\ufffd") if s and "\x00" in s else s


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    url = str(url)
    try:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        d = conninfo_to_dict(url)
        if "password" in d:
            d["password"] = "***"
            return make_conninfo(**d)
    except Exception:
        pass
    return url.split("@", 1)[-1] if "@" in url else url


def check_url(url: str) -> None:
    """ValueError (one line) for a store URL psycopg cannot parse."""
    if not isinstance(url, str) or not url.startswith(("postgresql://", "postgres://")):
        raise ValueError(f"store URL must start with postgresql:// (got {redact(url)!r})")
    try:
        from psycopg.conninfo import conninfo_to_dict

        conninfo_to_dict(url)
    except ImportError as e:
        raise ValueError("a postgresql:// store needs the psycopg package") from e
    except Exception as e:
        why = str(e).strip().splitlines()[0].replace(url, redact(url))  # psycopg quotes the URL, password too
        raise ValueError(f"bad store URL {redact(url)!r}: {why}") from e


def pg_where(flt: EventFilter) -> tuple[str, list]:
    """filters.EventFilter.where() for this schema: the same conditions, %s placeholders, rule and
    verdict as columns of events (no tags table: NULLs cost a bit in PostgreSQL, not a column)."""
    terms: list[str] = []
    params: list = []
    if flt.since:
        terms.append("ts >= %s")
        params.append(flt.since)
    if flt.until:
        terms.append("ts < %s")
        params.append(flt.until)
    kind_terms = []
    if flt.names:
        kind_terms.append("name = ANY(%s)")
        params.append([_t(n) for n in flt.names])
    for fam in flt.families:
        kind_terms.append("(name >= %s AND name < %s)")
        params.extend((_t(fam), _t(fam) + "\U0010ffff"))
    if kind_terms:
        terms.append("(" + " OR ".join(kind_terms) + ")")
    if flt.nodes:
        terms.append("stream IN (SELECT id FROM streams WHERE node = ANY(%s))")
        params.append([_t(n) for n in flt.nodes])
    if flt.agent_id:
        terms.append("stream IN (SELECT id FROM streams WHERE agent_id = %s)")
        params.append(_t(flt.agent_id))
    if flt.container:
        terms.append("container >= %s AND container < %s")
        params.extend((_t(flt.container), _t(flt.container) + "\U0010ffff"))
    if flt.namespace:
        terms.append("namespace = %s")
        params.append(_t(flt.namespace))
    if flt.pod:
        terms.append("pod = %s")
        params.append(_t(flt.pod))
    if flt.min_severity:
        terms.append("severity >= %s")
        params.append(flt.min_severity)
    for column, values in (("rule", flt.rules), ("verdict", flt.verdicts)):
        if values:
            terms.append(f"{column} = ANY(%s)")
            params.append([_t(v) for v in values])
    if flt.text:
        t = _t(flt.text)
        esc = t.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        terms.append("text ILIKE %s ESCAPE '\\'")
        params.append(f"%{esc}%")
    return (" AND ".join(terms) or "true"), params


class PendingWrite:
    __slots__ = ("events", "bodies", "rows", "done", "stored", "duplicates", "last_seq", "error")

    def __init__(self, events, bodies):
        self.events = events
        self.bodies = bodies
        # (stream key, seq, ts, name, severity, container, pod, namespace, text, rule, verdict, body)
        self.rows: list = []
        self.done = threading.Event()
        self.stored = 0
        self.duplicates = 0
        self.last_seq = 0
        self.error: BaseException | None = None


def build_rows(w: PendingWrite) -> dict:
    """Check one batch and build its rows (no database yet); returns {stream key: node}."""
    keys: dict = {}
    agent = boot = None
    names = last = 0
    rows = w.rows
    for i, (ev, body) in enumerate(zip(w.events, w.bodies, strict=True)):
        a, b = ev.agent_id, ev.boot_id
        if a != agent or b != boot:
            if not (a and b):
                raise BatchError(f"event {i} of the batch lacks agent_id, boot_id, seq or name")
            agent, boot = a, b
            names = len(a) + len(b)
            key = (_t(a), _t(b))
            keys.setdefault(key, _t(ev.node))
        seq, name = ev.seq, ev.name
        if not (name and seq):
            raise BatchError(f"event {i} of the batch lacks agent_id, boot_id, seq or name")
        if seq >= _MAX_SEQ:
            raise BatchError(f"event {i} of the batch has seq {seq}; seqs must be below 2^63")
        if names + len(name) + len(ev.node) > _MAX_NAMES:
            raise BatchError(f"event {i} of the batch has names or ids longer than {_MAX_NAMES} characters in all")
        if seq > last:
            last = seq
        p = ev.process
        kind = ev.WhichOneof("kind")
        rule = verdict = None
        if kind == "file":
            f = ev.file
            text = f"{p.executable}\n{p.command_line}\n{f.path}\n{f.target_path}"
        elif kind == "network":
            text = f"{p.executable}\n{p.command_line}\n{ev.network.peer_address}"
        elif kind in _DECIDED:
            text, (rule, verdict) = _decided(ev, p, kind)
        elif kind in _DEVICE:
            text = _device_text(ev, p, kind)
        else:
            text = f"{p.executable}\n{p.command_line}"
        c = ev.container
        rows.append((key, seq, ev.time_unix_nano, _t(name), ev.severity, _t(c.id) or None, _t(c.pod_name) or None,
                     _t(c.pod_namespace) or None, _t(text), _t(rule), _t(verdict), body))
    w.last_seq = last
    return keys


def one_line(e: Exception) -> str:
    """An error's first line (psycopg's messages run over several)."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def connect_side(pg, url: str, path: str, app: str, error: type[Exception]):
    """An autocommit connection for a side table of the PostgreSQL store (profiles, triage status); a failure is
    `error` in one line with the URL's password redacted (`path`)."""
    try:
        return pg.connect(url, autocommit=True, connect_timeout=10, application_name=app)
    except pg.Error as e:
        raise error(f"cannot open {path}: {one_line(e).replace(url, path)}") from None
