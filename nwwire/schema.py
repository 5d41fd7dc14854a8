"""The record key <-> protobuf field tables, built at import from the generated descriptors.

Each field of proto/nodewarden/v1/event.proto names the flat record key it carries with the
`(nodewarden.v1.key)` option, and each member of a `kind` or `subject` oneof the event.name it
carries with `(nodewarden.v1.event)` (options.proto). This module reads those options, so the
.proto files are the whole mapping: a field added there with its key is mapped here with no
table to edit. nwwire/codec.py walks records with these tables; the collector's filters use
`kind_names` and `SEVERITY`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf.descriptor import FieldDescriptor

from nwwire.genproto import load

pb = load("nodewarden.v1.event_pb2")
_opts = load("nodewarden.v1.options_pb2")

# How a field takes a record value (codec.py): INT and STRING are the fast path.
INT, STRING, BOOL, DOUBLE, LIST, MAP, MESSAGES, ENUM = range(8)

_INTS = {FieldDescriptor.TYPE_INT32, FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_UINT32,
         FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_SINT32, FieldDescriptor.TYPE_SINT64,
         FieldDescriptor.TYPE_FIXED32, FieldDescriptor.TYPE_FIXED64, FieldDescriptor.TYPE_SFIXED32,
         FieldDescriptor.TYPE_SFIXED64}
# Event fields the codec handles by hand (their record form is not the field's value).
SPECIAL = frozenset({"event.name", "timestamp", "event.severity", "event.truncated"})
SUBJECT = "subject"  # the oneof, in Alert and Enforcement, that holds the triggering event's kind

_sev = pb.DESCRIPTOR.enum_types_by_name["Severity"]
# "info" -> 2, ...: the enum's own names, lower case, without the SEVERITY_ prefix.
SEVERITY_NAMES: dict[int, str] = {v.number: v.name.removeprefix("SEVERITY_").lower() for v in _sev.values if v.number}
SEVERITY_EXACT: dict[str, int] = {name: num for num, name in SEVERITY_NAMES.items()}
# What the severity filter and event.severity also take (syslog's words, agent.vocab's aliases).
SEVERITY: dict[str, int] = {**SEVERITY_EXACT, "warning": SEVERITY_EXACT["medium"], "warn": SEVERITY_EXACT["medium"],
                            "error": SEVERITY_EXACT["high"]}


@dataclass(frozen=True)
class Table:
    """One message's mapping. keys: record key -> (field name, code); rev: field name -> (key, code);
    lists: (key, code) of its repeated and map fields, which come back empty when absent; elements:
    field name -> the Table of a repeated message's elements; subject: the oneof of a triggering
    event's kind, when the message has one."""

    name: str
    keys: dict[str, tuple[str, int]]
    rev: dict[str, tuple[str, int]]
    lists: tuple[tuple[str, int], ...]
    elements: dict[str, Table] = field(default_factory=dict)
    subject: Members | None = None


@dataclass(frozen=True)
class Members:
    """The members of a oneof whose members carry event names: member -> Table, and how an
    event.name picks its member (exact names first, then the longest family)."""

    tables: dict[str, Table]
    exact: dict[str, str]
    families: tuple[tuple[str, str], ...]  # ("file.", "file"), longest prefix first
    keys: dict[str, tuple[str, ...]]  # record key -> the members that have it

    def member(self, name: str) -> str | None:
        m = self.exact.get(name)
        if m is not None:
            return m
        for prefix, m in self.families:
            if name.startswith(prefix):
                return m
        return None


def _code(fd) -> int:
    if fd.message_type is not None:
        if fd.message_type.GetOptions().map_entry:
            return MAP
        return MESSAGES
    if fd.is_repeated:
        return LIST
    if fd.type in _INTS:
        return INT
    return {FieldDescriptor.TYPE_STRING: STRING, FieldDescriptor.TYPE_BOOL: BOOL,
            FieldDescriptor.TYPE_DOUBLE: DOUBLE, FieldDescriptor.TYPE_FLOAT: DOUBLE,
            FieldDescriptor.TYPE_ENUM: ENUM}.get(fd.type, STRING)


def key_of(fd) -> str:
    return fd.GetOptions().Extensions[_opts.key]


def event_of(fd) -> str:
    return fd.GetOptions().Extensions[_opts.event]


def _table(desc, skip=()) -> Table:
    keys, rev, lists, elements = {}, {}, [], {}
    subject = None
    for fd in desc.fields:
        if fd.name in skip:
            continue
        if fd.containing_oneof is not None and fd.containing_oneof.name == SUBJECT:
            continue  # read below, as the members of `subject`
        key = key_of(fd)
        if not key:
            continue  # a message-typed field with its own keys (Event.process), or extra_json
        code = _code(fd)
        keys[key] = (fd.name, code)
        rev[fd.name] = (key, code)
        if code in (LIST, MAP, MESSAGES):
            lists.append((key, code))
        if code == MESSAGES:
            elements[fd.name] = _table(fd.message_type)
    if SUBJECT in desc.oneofs_by_name:
        subject = _members(desc.oneofs_by_name[SUBJECT])
    return Table(desc.name, keys, rev, tuple(lists), elements, subject)


def _members(oneof) -> Members:
    tables, exact, families, keys = {}, {}, [], {}
    for fd in oneof.fields:
        t = tables[fd.name] = _table(fd.message_type)
        pattern = event_of(fd)
        if pattern.endswith(".*"):
            families.append((pattern[:-1], fd.name))
        elif pattern:
            exact[pattern] = fd.name
        for k in t.keys:
            keys[k] = (*keys.get(k, ()), fd.name)
    families.sort(key=lambda f: -len(f[0]))
    return Members(tables, exact, tuple(families), keys)


_EVENT = pb.Event.DESCRIPTOR
PROCESS = _table(pb.Process.DESCRIPTOR)
CONTAINER = _table(pb.Container.DESCRIPTOR)
# Event's own scalar fields (the identity: host.name, nodewarden.agent_id, nodewarden.boot_id, seq), without the
# ones the codec handles by hand and without the `kind` members.
TOP = _table(_EVENT, skip={fd.name for fd in _EVENT.fields if key_of(fd) in SPECIAL
                           or fd.containing_oneof is not None})
KINDS = _members(_EVENT.oneofs_by_name["kind"])


def kind_names(member: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(exact event names, family prefixes) an Event.kind member carries: "verdict" ->
    (("image.verdict",), ()), "file" -> ((), ("file.",)); ((), ()) when there is no such member."""
    exact = tuple(n for n, m in KINDS.exact.items() if m == member)
    fams = tuple(p for p, m in KINDS.families if m == member)
    return exact, fams
