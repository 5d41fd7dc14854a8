"""`python -m agent.detect.native_build`: compile the rules' pre-condition (agent/detect/native.py).
scripts/setup.sh runs it; a failure is one line and status 1, and the agent then uses the Python code."""

from __future__ import annotations

import sys

from agent.detect import native


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args:
        print("usage: python -m agent.detect.native_build", file=sys.stderr)
        return 2
    try:
        print(native.build())
    except RuntimeError as e:
        print(f"rules pre-condition: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
