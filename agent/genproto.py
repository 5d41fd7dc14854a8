"""The generated-code loader now lives in the shared wire package (nwwire/genproto.py), which
the agent and the collector both import; this name stays for the agent's callers and for
`python -m agent.genproto` in older build scripts."""

from __future__ import annotations

import sys

from nwwire.genproto import GEN_DIR, PROTO_DIR, GenerateError, generate, load, main

__all__ = ["GEN_DIR", "PROTO_DIR", "GenerateError", "generate", "load", "main"]

if __name__ == "__main__":
    sys.exit(main())
