"""The wire package: what the agent and the collector share, and nothing else of either.

- `genproto`: the protobuf/gRPC code generated from proto/ (into nwwire/gen/, gitignored).
- `schema`: the record key <-> field tables, built at import from the `(key)` / `(event)`
  field options in proto/nodewarden/v1/*.proto.
- `codec`: the flat record <-> Event (`to_event`, `to_record`), the one mapping.
- `protowire`: protobuf wire helpers for bytes already encoded (spooled batches, stored bodies),
  with field numbers taken from the descriptors.

It imports nothing of `agent` or `collector`: both import it.
"""
