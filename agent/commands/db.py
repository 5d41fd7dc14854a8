"""`nodewarden db`: the offline databases of the image gate: advisories (OSV JSON) and known-bad hashes.

  nodewarden db import SRC [--db DIR]   add the advisories of SRC (a directory of OSV .json files,
                                        an OSV zip such as Debian/all.zip, or one .json file)
  nodewarden db import-hashes FILE [--hash-db STORE] [--source NAME] [--replace]
                                        add the sha256 digests of FILE (sha256 lists, sha256sum
                                        output, a MalwareBazaar CSV dump or its zip) to the store
  nodewarden db info [--db DIR] [--hash-db STORE]   what the databases hold

A running agent picks the change up within its refresh interval and drops cached image results.
Exit status: 0 done, 1 some advisories or lines were rejected (the rest imported), 2 error.
"""

from __future__ import annotations

import sys

NAME = "db"
HELP = "manage the offline vulnerability advisory database (OSV format): import, info"
DEFAULT_DB = "/var/lib/nodewarden/advisories"
DEFAULT_HASH_DB = "/var/lib/nodewarden/known-bad.hashdb"  # ImageGateConfig.hash_db
_STORE_HELP = f"known-bad hash store file (default {DEFAULT_HASH_DB})"
_SHOWN = 20  # rejections printed, one line each; the rest are counted


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="db_command", metavar="SUBCOMMAND")
    imp = sub.add_parser("import", help="import OSV advisories from a directory, zip or .json file")
    imp.add_argument("source", metavar="SRC")
    imp.add_argument("--db", metavar="DIR", default=DEFAULT_DB, help=f"database directory (default {DEFAULT_DB})")
    hs = sub.add_parser("import-hashes", help="import known-bad sha256 digests (lists, MalwareBazaar CSV or zip)")
    hs.add_argument("source", metavar="FILE")
    hs.add_argument("--hash-db", metavar="STORE", default=DEFAULT_HASH_DB, help=_STORE_HELP)
    hs.add_argument("--source", dest="label", metavar="NAME", default="",
                    help="name the digests' labels start with (default: FILE's name); findings show it as hash:NAME")
    hs.add_argument("--replace", action="store_true", help="replace the store's content instead of merging into it")
    info = sub.add_parser("info", help="advisory counts per ecosystem, known-bad hash count")
    info.add_argument("--db", metavar="DIR", default=DEFAULT_DB, help=f"database directory (default {DEFAULT_DB})")
    info.add_argument("--hash-db", metavar="STORE", default=DEFAULT_HASH_DB, help=_STORE_HELP)


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
    if cmd == "import-hashes":
        return _import_hashes(args)
    if cmd == "info":
        fp = osv.fingerprint(args.db)
        if fp:
            db = osv.AdvisoryDB(args.db)
            per = db.summary()
            print(f"{args.db}: {db.count} advisories, fingerprint {fp}")
            for eco, n in sorted(per.items()):
                print(f"  {eco}: {n} package entries")
        else:
            print(f"nodewarden db: {args.db}: no database", file=sys.stderr)
        hashes = _hash_info(args.hash_db)
        # 2 when a store is there but unusable, or when there is neither database.
        return 2 if hashes == 2 or (not fp and hashes == 1) else 0
    print("nodewarden db: give a subcommand: import SRC | import-hashes FILE | info", file=sys.stderr)
    return 2


def _import_hashes(args) -> int:
    from agent.imagegate import hashdb

    try:
        res = hashdb.import_hashes(args.source, args.hash_db, source=args.label, replace=args.replace)
    except (hashdb.HashDBError, OSError) as e:
        hint = " (use --replace to start a new store)" if "hash store" in str(e) else ""
        print(f"nodewarden db: {e}{hint}", file=sys.stderr)
        return 2
    for e in res.errors[:_SHOWN]:
        print(f"nodewarden db: rejected {e}", file=sys.stderr)
    if res.bad > _SHOWN:
        print(f"nodewarden db: ... and {res.bad - _SHOWN} more rejected", file=sys.stderr)
    print(f"imported {res.added + res.updated} digests ({res.fmt}) into {res.path}: {res.added} new, "
          f"{res.updated} already there, {res.duplicates} repeated in the file, {res.bad} lines rejected; "
          f"{res.total} in the store ({res.size / 1e6:.1f} MB)")
    return 1 if res.bad else 0


def _hash_info(path: str) -> int:
    """Print what the hash store holds: 0 shown, 1 none there, 2 unusable."""
    import os

    from agent.imagegate import hashdb

    if not os.path.exists(path):
        print(f"{path}: no known-bad hash store")
        return 1
    try:
        db = hashdb.HashDB.open(path)
        try:
            db.verify()
            print(f"{path}: {len(db)} known-bad hashes, {db.label_count} labels, "
                  f"{db.size / 1e6:.1f} MB, fingerprint {db.fingerprint}")
        finally:
            db.close()
    except hashdb.HashDBError as e:
        print(f"nodewarden db: {e}", file=sys.stderr)
        return 2
    return 0
