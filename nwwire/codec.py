"""The flat record (agent/outputs/record.py) <-> the protobuf Event (proto/nodewarden/v1/event.proto).

`to_event` maps every record key the schema knows onto its field (nwwire/schema.py reads the
mapping from the .proto options); a key it does not know, or a value of the wrong type, goes
into `extra_json` instead of being lost. `to_record` is the exact inverse: to_record(to_event(r))
== r, plus the stamped identity keys (host.name, nodewarden.agent_id, nodewarden.boot_id, seq). The collector,
`nodewarden events --json` and the tests all read events back through `to_record`.

`to_event` never raises on a record's content: lone surrogates (os.fsdecode of bytes that are
not UTF-8, or anything else) in names, values or keys become backslash escapes, values out of a
field's range go to extra_json, and what JSON cannot hold goes there as text.
"""

from __future__ import annotations

import calendar
import codecs
import time
from datetime import datetime

import orjson

from nwwire.schema import (
    BOOL,
    CONTAINER,
    DOUBLE,
    ENUM,
    INT,
    KINDS,
    LIST,
    MAP,
    MESSAGES,
    PROCESS,
    SEVERITY,
    SEVERITY_EXACT,
    SEVERITY_NAMES,
    SPECIAL,
    STRING,
    TOP,
    Table,
    pb,
)

_ERRORS = (TypeError, ValueError, OverflowError, AttributeError)

# -- time ------------------------------------------------------------------------------------------

_head_cache: dict[int, str] = {}
_sec_cache: dict[str, int] = {}


def rfc3339(ts_ns: int) -> str:
    """RFC 3339 UTC with nanoseconds, e.g. 2026-11-24T11:25:20.123456789Z (record.py's form)."""
    sec, ns = divmod(ts_ns, 1_000_000_000)
    head = _head_cache.get(sec)
    if head is None:  # events come in bursts within a few seconds
        if len(_head_cache) > 4096:
            _head_cache.clear()
        head = _head_cache[sec] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return f"{head}.{ns:09d}Z"


def parse_timestamp(s: str) -> int:
    """RFC 3339 -> ns since the epoch. Fast for record.py's own form, which repeats its
    seconds prefix across a burst; any other ISO 8601 form goes through datetime."""
    if len(s) == 30 and s[19] == "." and s[29] == "Z":
        head = s[:19]
        sec = _sec_cache.get(head)
        if sec is None:
            if len(_sec_cache) > 4096:  # bounded: a burst spans few distinct seconds
                _sec_cache.clear()
            sec = calendar.timegm(time.strptime(head, "%Y-%m-%dT%H:%M:%S"))
            _sec_cache[head] = sec
        return sec * 1_000_000_000 + int(s[20:29])
    dt = datetime.fromisoformat(s)
    if dt.tzinfo is None:
        raise ValueError(f"timestamp without a time zone: {s!r}")
    return int(dt.timestamp()) * 1_000_000_000 + dt.microsecond * 1000


# -- text that protobuf and JSON cannot hold ---------------------------------------------------------


def _escape_surrogates(err: UnicodeError):
    """Error handler: a lone surrogate that os.fsdecode made from a byte (U+DC80..U+DCFF) becomes
    that byte's \\xNN, any other lone surrogate its \\uNNNN; the text stays readable and searchable."""
    bad = err.object[err.start:err.end]
    out = "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else f"\\u{ord(c):04x}" for c in bad)
    return out, err.end


codecs.register_error("nwwire.surrogates", _escape_surrogates)


def clean(v):
    """A copy that protobuf and JSON can hold: lone surrogates escaped, keys made text, ints
    beyond 64 bits made text."""
    if isinstance(v, str):
        return v.encode("utf-8", "nwwire.surrogates").decode("utf-8")
    if isinstance(v, dict):
        return {clean(k if isinstance(k, str) else str(k)): clean(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [clean(x) for x in v]
    if isinstance(v, int) and not isinstance(v, bool) and not -(2**63) <= v < 2**64:
        return str(v)
    return v


def _json(extra: dict) -> bytes:
    try:
        return orjson.dumps(extra, default=repr, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # lone surrogates, huge ints; a repr() may hold surrogates too
        return orjson.dumps(clean(extra), default=lambda o: clean(repr(o)))


# -- record -> Event -----------------------------------------------------------------------------------


def kind_of(name: str) -> str | None:
    """The Event.kind member an event.name fills, or None (its keys then go to extra_json)."""
    return KINDS.member(name)


def _put(msg, f: str, code: int, val, table: Table | None = None) -> None:
    """Set one field from a record value of exactly its type; raises one of _ERRORS otherwise."""
    if code == STRING or code == INT:
        if val.__class__ is bool:
            raise TypeError("bool in a numeric or string field")  # would come back as 0/1
        try:
            setattr(msg, f, val)
        except ValueError:
            if code != STRING or not isinstance(val, str):
                raise
            setattr(msg, f, clean(val))  # lone surrogates: an undecodable file name stays searchable
    elif code == BOOL or code == DOUBLE:
        if val.__class__ is not (bool if code == BOOL else float):
            raise TypeError("not a bool" if code == BOOL else "not a float")  # so the type comes back as it went
        setattr(msg, f, val)
    elif code == LIST:
        if not isinstance(val, list | tuple):
            raise TypeError("not a list")
        rep = getattr(msg, f)
        try:
            if any(x.__class__ is bool for x in val):
                raise TypeError("bool in a list of numbers or strings")
            rep.extend(val)
        except _ERRORS:
            del rep[:]
            raise
    elif code == MAP:
        if not isinstance(val, dict) or not all(
                k.__class__ is str and v.__class__ is int and v >= 0 for k, v in val.items()):
            raise TypeError("not a map of text to counts")
        m = getattr(msg, f)
        try:
            m.update(val)
        except _ERRORS:
            m.clear()
            raise
    elif code == MESSAGES:
        _put_messages(getattr(msg, f), val, table.elements[f])
    elif code == ENUM:
        num = SEVERITY_EXACT.get(val) if isinstance(val, str) else None
        if num is None:
            raise ValueError(f"not a severity: {val!r}")
        setattr(msg, f, num)


def _put_messages(rep, val, elem: Table) -> None:
    """A list of dicts (image.findings) -> repeated messages, all or none."""
    if not isinstance(val, list | tuple):
        raise TypeError("not a list")
    try:
        for d in val:
            if not isinstance(d, dict):
                raise TypeError("not a dict")
            m = rep.add()
            for k, v in d.items():
                ent = elem.keys.get(k)
                if ent is None:
                    raise KeyError(k)
                _put(m, ent[0], ent[1], v, elem)
                if ent[1] == STRING and getattr(m, ent[0]) != v:
                    raise ValueError("text with lone surrogates")  # the whole list goes to extra_json
    except (KeyError, *_ERRORS) as e:
        del rep[:]
        raise ValueError(f"element does not fit: {e}") from None


def _special(ev, key: str, val, extra: dict) -> None:
    if key == "event.name":
        if not isinstance(val, str):
            extra[key] = val
    elif key == "timestamp":
        ts = parse_timestamp(val)
        ev.time_unix_nano = ts
        if rfc3339(ts) != val:  # another form: keep the text as written
            extra[key] = val
    elif key == "event.severity":
        sev = SEVERITY.get(val.lower()) if isinstance(val, str) else None
        if sev is None:
            extra[key] = val
            return
        ev.severity = sev
        if SEVERITY_NAMES[sev] != val:
            extra[key] = val
    elif key == "event.truncated":
        if val is True:
            ev.truncated = True
        else:
            extra[key] = val


def to_event(rec: dict):
    """One flat record -> one Event. Never raises on a record's content."""
    ev = pb.Event()
    name = rec.get("event.name")
    if name.__class__ is not str:
        name = ""
    try:
        ev.name = name
    except ValueError:  # lone surrogates
        ev.name = clean(name)
    kind = KINDS.member(name)
    ktab = KINDS.tables[kind] if kind else None
    kmsg = getattr(ev, kind) if kind else None
    subject = ktab.subject if ktab is not None else None
    pkeys, ckeys, tkeys = PROCESS.keys, CONTAINER.keys, TOP.keys
    kkeys = ktab.keys if ktab is not None else {}
    proc, cont = ev.process, ev.container
    extra: dict = {}
    pending: list = []  # keys of a triggering event's kind, set once its member is known
    for key, val in rec.items():
        ent = pkeys.get(key)
        if ent is not None:
            msg = proc
        else:
            ent = ckeys.get(key)
            if ent is not None:
                msg = cont
            else:
                ent = kkeys.get(key)
                if ent is not None:
                    msg = kmsg
                elif key in SPECIAL:
                    try:
                        _special(ev, key, val, extra)
                    except _ERRORS:
                        extra[key] = val
                    continue
                else:
                    ent = tkeys.get(key)
                    if ent is None:
                        if subject is not None and key in subject.keys:
                            pending.append((key, val))
                        else:
                            extra[key] = val
                        continue
                    msg = ev
        if msg is proc and ent[1] == LIST and isinstance(val, list) and not val:
            extra[key] = val  # Process's lists (ancestry) are absent when empty: an explicit [] travels as itself
            continue
        try:
            _put(msg, ent[0], ent[1], val, ktab)
        except _ERRORS:
            extra[key] = val
    if kind is not None and not ev.HasField(kind):
        kmsg.SetInParent()  # the kind shows even when the record had none of its keys
    if pending:
        _put_subject(kmsg, subject, rec.get("trigger.name"), pending, extra)
    if extra:
        ev.extra_json = _json(extra)
    return ev


def _put_subject(kmsg, subject, trigger, pending: list, extra: dict) -> None:
    """The triggering event's kind keys into the member of `subject` that its trigger.name names
    (alerts), or else the one member the first unambiguous key belongs to (an enforcement's
    stopped process event); keys of no member of that kind go to extra_json."""
    member = subject.member(trigger) if isinstance(trigger, str) else None
    if member is None:
        member = next((subject.keys[k][0] for k, _ in pending if len(subject.keys[k]) == 1), None)
    if member is None:
        extra.update(pending)
        return
    smsg = getattr(kmsg, member)
    smsg.SetInParent()
    stab = subject.tables[member]
    for key, val in pending:
        ent = stab.keys.get(key)
        if ent is None:
            extra[key] = val
            continue
        try:
            _put(smsg, ent[0], ent[1], val, stab)
        except _ERRORS:
            extra[key] = val


# -- Event -> record -------------------------------------------------------------------------------------


def _read(rec: dict, msg, table: Table) -> None:
    rev = table.rev
    for fd, v in msg.ListFields():
        ent = rev.get(fd.name)
        if ent is None:
            continue  # a subject member (read by the caller)
        key, code = ent
        if code == LIST:
            v = list(v)
        elif code == MAP:
            v = dict(v)
        elif code == MESSAGES:
            elem = table.elements[fd.name]
            v = [_element(m, elem) for m in v]
        elif code == ENUM:
            v = SEVERITY_NAMES.get(v, str(v))
        rec[key] = v
    for key, code in table.lists:  # proto cannot tell [] from absent; record.py always writes its lists
        if key not in rec:
            rec[key] = {} if code == MAP else []


def _element(m, elem: Table) -> dict:
    d = {}
    for fd, v in m.ListFields():
        key, code = elem.rev[fd.name]
        if code == ENUM:
            v = SEVERITY_NAMES.get(v, str(v))
        elif code == LIST:
            v = list(v)
        elif code == MESSAGES:  # a list of dicts inside an element (posture.findings' containers)
            v = [_element(x, elem.elements[fd.name]) for x in v]
        d[key] = v
    for key, code in elem.lists:  # as in _read: an empty list comes back as one
        if key not in d:
            d[key] = {} if code == MAP else []
    return d


def to_record(ev) -> dict:
    """One Event -> the flat record it was made from (with the identity keys)."""
    rec = {"event.name": ev.name, "timestamp": rfc3339(ev.time_unix_nano)}
    if ev.severity:
        rec["event.severity"] = SEVERITY_NAMES.get(ev.severity, str(ev.severity))
    rec["host.name"] = ev.node
    rec["nodewarden.agent_id"] = ev.agent_id
    rec["nodewarden.boot_id"] = ev.boot_id
    rec["seq"] = ev.seq
    if ev.truncated:
        rec["event.truncated"] = True
    prev = PROCESS.rev
    for fd, v in ev.process.ListFields():
        key, code = prev[fd.name]
        rec[key] = list(v) if code == LIST else v  # process.ancestors.*: a plain list, as it went
    crev = CONTAINER.rev
    for fd, v in ev.container.ListFields():
        rec[crev[fd.name][0]] = v
    kind = ev.WhichOneof("kind")
    if kind:
        ktab = KINDS.tables[kind]
        kmsg = getattr(ev, kind)
        _read(rec, kmsg, ktab)
        if ktab.subject is not None:
            member = kmsg.WhichOneof("subject")
            if member:
                _read(rec, getattr(kmsg, member), ktab.subject.tables[member])
    if ev.extra_json:
        try:
            rec.update(orjson.loads(ev.extra_json))
        except orjson.JSONDecodeError:
            rec["event.extra_json_invalid"] = ev.extra_json.decode("utf-8", "replace")
    return rec
