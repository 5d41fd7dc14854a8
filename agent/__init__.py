"""NodeWarden: a per-node runtime security agent."""

__version__ = "0.1.0"
