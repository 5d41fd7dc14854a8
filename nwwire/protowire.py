"""Protobuf wire format by hand, where bytes already encoded go out again without a re-parse
(spooled batches on the agent, stored event bodies on the collector).

Facts: protobuf's encoding guide (base-128 varints; a field key is (number << 3) | wire type;
2 = length-delimited, 0 = varint). Field numbers come from the generated descriptors
(`number(cpb.Batch, "events")`), never from literals, so a .proto edit cannot leave them behind.
"""

from __future__ import annotations


def number(message_class, field: str) -> int:
    """The field number of `field` in a generated message class (KeyError if there is none)."""
    return message_class.DESCRIPTOR.fields_by_name[field].number


def varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field_bytes(num: int, payload: bytes) -> bytes:
    """A length-delimited field (a message, bytes or a string) already encoded."""
    return varint((num << 3) | 2) + varint(len(payload)) + payload


def field_varint(num: int, value: int) -> bytes:
    return varint(num << 3) + varint(value)
