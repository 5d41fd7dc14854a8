"""`python -m agent.sensors.native_build`: compile the native decoders (agent/sensors/native.py).
scripts/setup.sh runs it; a failure is one line and status 1, and the agent then uses the Python decoders."""

from __future__ import annotations

import sys

from agent.sensors import native


def main() -> int:
    try:
        print(native.build())
    except RuntimeError as e:
        print(f"native decoders: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
