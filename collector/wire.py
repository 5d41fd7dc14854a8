"""Each event of an IngestRequest as the bytes it arrived in, without re-serializing it.

`RawIngestRequest` has IngestRequest's layout with `Batch.events` read as `repeated bytes`
(the field numbers read from collector.proto's generated descriptors, the view built at import:
it is a view of collector.proto, not part of the API). Parsing a request with it is one C call that copies
each event's bytes; the collector stores those bytes as the row's body. The request is still
parsed as a real IngestRequest too: that parse validates every event (a malformed one is
refused) and gives the fields the store indexes.
"""

from __future__ import annotations

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from nwwire.genproto import load
from nwwire.protowire import number

_F = descriptor_pb2.FieldDescriptorProto
_cpb = load("nodewarden.v1.collector_pb2")


def _build():
    fd = descriptor_pb2.FileDescriptorProto(name="nodewarden/collector/raw_ingest.proto",
                                            package="nodewarden.collector.raw", syntax="proto3")
    batch = fd.message_type.add(name="RawBatch")
    batch.field.add(name="batch_id", number=number(_cpb.Batch, "batch_id"), type=_F.TYPE_UINT64,
                    label=_F.LABEL_OPTIONAL)
    batch.field.add(name="events", number=number(_cpb.Batch, "events"), type=_F.TYPE_BYTES,
                    label=_F.LABEL_REPEATED)
    req = fd.message_type.add(name="RawIngestRequest")  # hello is left unknown
    req.field.add(name="batch", number=number(_cpb.IngestRequest, "batch"), type=_F.TYPE_MESSAGE,
                  label=_F.LABEL_OPTIONAL, type_name=".nodewarden.collector.raw.RawBatch")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("nodewarden.collector.raw.RawIngestRequest"))


RawIngestRequest = _build()


def event_bodies(raw: bytes, events):
    """The serialized events of the IngestRequest `raw`, whose parsed batch.events is `events`;
    None when the two cannot be matched one to one (the caller then serializes)."""
    try:
        bodies = RawIngestRequest.FromString(raw).batch.events
    except DecodeError:  # not expected: this layout is looser than the one that parsed
        return None
    # Only a request that repeats `batch` around a `hello` can make them differ (the real
    # parse keeps the batches after the last hello, this one all of them): then counts differ
    # unless the batches before were empty, and then the lists are the same.
    return bodies if len(bodies) == len(events) else None
