"""`nodewarden db`: the offline advisory database of the image gate (OSV JSON format).

  nodewarden db import SRC [--db DIR]   add the advisories of SRC (a directory of OSV .json files,
                                        an OSV zip such as Debian/all.zip, or one .json file)
  nodewarden db info [--db DIR]         what the database holds

A running agent picks the change up within its refresh interval and drops cached image results.
Exit status: 0 done, 1 some advisories were rejected (the rest imported), 2 error.
"""

from __future__ import annotations

import sys

NAME = "db"
HELP = "manage the offline vulnerability advisory database (OSV format): import, info"
DEFAULT_DB = "/var/lib/nodewarden/advisories"


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="db_command", metavar="SUBCOMMAND")
    imp = sub.add_parser("import", help="import OSV advisories from a directory, zip or .json file")
    imp.add_argument("source", metavar="SRC")
    imp.add_argument("--db", metavar="DIR", default=DEFAULT_DB, help=f"database directory (default {DEFAULT_DB})")
    info = sub.add_parser("info", help="advisory counts per ecosystem")
    info.add_argument("--db", metavar="DIR", default=DEFAULT_DB, help=f"database directory (default {DEFAULT_DB})")


def main(args) -> int:
    from agent.imagegate import osv

    cmd = getattr(args, "db_command", None)
    if cmd == "import":
        try:
            n, errors = osv.import_db(args.source, args.db)
        except (osv.OsvError, OSError) as e:
            print(f"nodewarden db: {e}", file=sys.stderr)
            return 2
        for e in errors[:20]:
            print(f"nodewarden db: rejected {e}", file=sys.stderr)
        if len(errors) > 20:
            print(f"nodewarden db: ... and {len(errors) - 20} more rejected", file=sys.stderr)
        print(f"imported {n} advisories into {args.db} ({len(errors)} rejected)")
        return 1 if errors else 0
    if cmd == "info":
        fp = osv.fingerprint(args.db)
        if not fp:
            print(f"nodewarden db: {args.db}: no database", file=sys.stderr)
            return 2
        db = osv.AdvisoryDB(args.db)
        per = db.summary()
        print(f"{args.db}: {db.count} advisories, fingerprint {fp}")
        for eco, n in sorted(per.items()):
            print(f"  {eco}: {n} package entries")
        return 0
    print("nodewarden db: give a subcommand: import SRC | info", file=sys.stderr)
    return 2
