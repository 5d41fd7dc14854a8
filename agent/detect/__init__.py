"""Detection: rules over typed events (issue 10).

fields.py is the registry of what a condition can read from an `Enriched` event (our record's
field names, and Falco's names as aliases); condition.py parses a condition and compiles it
once into closures. The rules loader (agent/policy) and the engine build on those two.
"""
