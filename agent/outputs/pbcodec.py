"""The record <-> Event mapping, for the agent's outputs: a thin import of the shared wire package.

The mapping itself lives in nwwire/codec.py (tables from the .proto options, nwwire/schema.py), so
the collector reads events with the same code without importing the agent.
"""

from __future__ import annotations

from nwwire.codec import clean, kind_of, parse_timestamp, rfc3339, to_event, to_record
from nwwire.protowire import field_bytes, field_varint, number, varint
from nwwire.schema import SEVERITY, SEVERITY_NAMES, pb

__all__ = ["SEVERITY", "SEVERITY_NAMES", "clean", "field_bytes", "field_varint", "kind_of", "number",
           "parse_timestamp", "pb", "rfc3339", "to_event", "to_record", "varint"]
