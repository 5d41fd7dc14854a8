"""The `nodewarden` command: one subcommand per module in agent/commands/."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module defines NAME, HELP, add_arguments(parser) and main(args) -> int.
# Imported lazily so that `nodewarden events` never pays for bcc.
COMMANDS = [
    "agent.commands.run",
    "agent.commands.collector",
    "agent.commands.events",
    "agent.commands.containers",
    "agent.commands.status",
    "agent.commands.scan",
    "agent.commands.db",
    "agent.commands.rules",
    "agent.commands.devices",
    "agent.commands.profile",
    "agent.commands.posture",
]


def version_line() -> str:
    """`nodewarden --version`: ours, then what bug reports need (the same as nodewarden_build_info)."""
    import platform

    from agent import __version__

    return f"nodewarden {__version__} (Python {platform.python_version()}, kernel {platform.release()})"


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(
        prog="nodewarden",
        description="NodeWarden: runtime security agent for Kubernetes nodes (eBPF sensors, image gate, "
        "enforcement, gRPC collector).",
    )
    parser.add_argument("--version", action="version", version=version_line())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    mods = {}
    for name in COMMANDS:
        mod = importlib.import_module(name)
        p = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        mods[mod.NAME] = mod
    return parser, mods


def main(argv: list[str] | None = None) -> int:
    parser, mods = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        return int(mods[args.command].main(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
