"""`python -m agent.sensors.native_build`: compile the native decoders (agent/sensors/native.py).
scripts/setup.sh runs it; a failure is one line and status 1, and the agent then uses the Python decoders.
`--sanitize`: an AddressSanitizer + UBSan build into build/native-asan/ (never the object the agent loads),
for tests run with it (tests/unit/test_native_sanitize.py says how)."""

from __future__ import annotations

import sys

from agent.sensors import native


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args not in ([], ["--sanitize"]):
        print("usage: python -m agent.sensors.native_build [--sanitize]", file=sys.stderr)
        return 2
    try:
        print(native.build(sanitize=args == ["--sanitize"]))
    except RuntimeError as e:
        print(f"native decoders: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
