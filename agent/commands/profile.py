"""`nodewarden profile`: the behaviour profiles this node learned (agent/detect/profile/), by hand.

  nodewarden profile list [--json]                 every profile: mode, run time learned, items per kind
  nodewarden profile show KEY [--json]             one profile's items, overflow and deviations
  nodewarden profile lock KEY [--mode protecting|monitoring]   stop learning; enforce (default protecting)
  nodewarden profile unlock KEY                    back to learning, with a fresh window
  nodewarden profile forget KEY                    delete it: the workload learns afresh
  nodewarden profile export [KEY] [-o FILE]        the profile document(s), JSON (one object, or a list)
  nodewarden profile import FILE                   documents from export (or the collector), merged in

KEY is a profile's key, a unique prefix of it, or its file name (`list` shows the first 12 characters:
they are enough). list/show/export read the profile files, which a running agent writes every
profiles.flush_s. The changes go through the running agent when there is one (status.json in its state dir
names a live pid): a request file in <profiles dir>/requests/, applied on its next tick (<= 1 s), answered
in a .done file, waited for --wait seconds. With no agent running the command applies the change to the
files itself. Exit status: 0 done, 1 error (one line on stderr), 2 a usage error (a bad option).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time

import orjson

from agent.commands.status import read_agent

NAME = "profile"
HELP = "list, show, lock, unlock, forget, export or import the behaviour profiles learned per workload"

DEFAULT_STATE_DIR = "/var/lib/nodewarden"  # AgentConfig.state_dir
KINDS = ("exec", "edge", "user", "peer", "listen", "write")  # agent/detect/profile: the kinds of items
_FILE = re.compile(r"^[0-9a-f]{24}\.json$")  # ProfileStore: sha256(key)[:24].json
_MAX_FILE = 64 << 20  # a profile is well under a MiB (512 items per kind); a larger file is not one of ours
_SHOWN = 5  # unreadable files named one by one on stderr; the rest are counted
_ID = 12  # characters of the file name `list` shows
_KEY_HINT = "give a key, a prefix of one (they start with the namespace) or the ID that `profile list` shows"


class _Fail(Exception):
    """The command stops: one line for stderr, exit status 1."""


def add_arguments(p) -> None:
    _common(p, None)
    sub = p.add_subparsers(dest="profile_command", metavar="SUBCOMMAND")
    ls = sub.add_parser("list", help="every profile: mode, run time learned, items per kind")
    ls.add_argument("--json", action="store_true", help="a JSON list of summaries")
    show = sub.add_parser("show", help="one profile's items, overflow and deviations")
    show.add_argument("key", metavar="KEY")
    show.add_argument("--json", action="store_true", help="the profile document")
    lock = sub.add_parser("lock", help="stop learning and enforce the profile (monitoring: alert; protecting: kill)")
    lock.add_argument("key", metavar="KEY")
    lock.add_argument("--mode", choices=("protecting", "monitoring"), default="protecting",
                      help="protecting (default): a new executable is killed, new peers and write locations alert; "
                           "monitoring: every new item alerts")
    for name, what in (("unlock", "back to learning with a fresh window (run time and deviations cleared)"),
                       ("forget", "delete the profile: the workload learns afresh")):
        sp = sub.add_parser(name, help=what)
        sp.add_argument("key", metavar="KEY")
    exp = sub.add_parser("export", help="profile documents as JSON: one object for KEY, else a list of all")
    exp.add_argument("key", metavar="KEY", nargs="?")
    exp.add_argument("-o", "--output", metavar="FILE", default="-", help="write to FILE (default stdout)")
    imp = sub.add_parser("import", help="merge in profile documents (from export): one object or a list")
    imp.add_argument("file", metavar="FILE")
    for sp in (ls, show, lock, exp, imp, *[sub.choices[n] for n in ("unlock", "forget")]):
        _common(sp, argparse.SUPPRESS)  # the same options after the subcommand too
    for sp in (lock, imp, sub.choices["unlock"], sub.choices["forget"]):
        sp.add_argument("--wait", type=_seconds, default=argparse.SUPPRESS, metavar="SECONDS",
                        help="how long to wait for a running agent's answer (default 5)")


def _seconds(text: str) -> float:
    try:
        secs = float(text)
    except ValueError:
        secs = -1.0
    if not 0 <= secs <= 600:  # nan fails too: a deadline of nan would never pass
        raise argparse.ArgumentTypeError(f"expected seconds from 0 to 600, got {text[:40]!r}")
    return secs


def _common(p, default) -> None:
    """--state-dir/--config/--profiles-dir, on `profile` and on each subcommand; a subcommand's copy
    defaults to SUPPRESS so that it does not overwrite a value given before the subcommand."""
    p.add_argument("--state-dir", default=default, metavar="DIR",
                   help=f"the agent's state dir (default: the agent config's, {DEFAULT_STATE_DIR})")
    p.add_argument("--config", default=default, metavar="FILE",
                   help="the agent's YAML config (agent.state_dir, profiles.state_dir)")
    p.add_argument("--profiles-dir", default=default, metavar="DIR",
                   help="where the profiles are (default: profiles.state_dir, else <state dir>/profiles)")


def main(args) -> int:
    cmd = getattr(args, "profile_command", None)
    if not cmd:
        print("nodewarden profile: give a subcommand: list | show KEY | lock KEY | unlock KEY | forget KEY | "
              "export [KEY] | import FILE", file=sys.stderr)
        return 1
    try:
        state_dir, directory = _dirs(args)
        return _COMMANDS[cmd](args, state_dir, directory)
    except _Fail as e:
        print(f"nodewarden profile: {e}", file=sys.stderr)
        return 1


def _dirs(args) -> tuple[str, str]:
    """(the agent's state dir, the profiles dir): flags, else the agent config (file and NODEWARDEN_* env)."""
    from agent import config

    try:
        cfg = config.load(args.config)
    except config.ConfigError as e:
        raise _Fail(str(e)) from None
    state_dir = args.state_dir or cfg.agent.state_dir or DEFAULT_STATE_DIR
    return state_dir, args.profiles_dir or cfg.profiles.state_dir or os.path.join(state_dir, "profiles")


# --- reading the files ---------------------------------------------------------------------------------------

def _read_all(directory: str) -> list[tuple[str, object]]:
    """[(file name without .json, Profile)] sorted by key. Read-only: an unreadable file is named on
    stderr and skipped (the agent moves it aside at its next start), never fatal."""
    from agent.detect.profile.model import Profile

    try:
        names = sorted(n for n in os.listdir(directory) if _FILE.match(n))
    except FileNotFoundError:
        return []
    except OSError as e:
        raise _Fail(f"{directory}: cannot list: {e.strerror}") from None
    out, bad = [], []
    for name in names:
        path = os.path.join(directory, name)
        try:
            out.append((name[:-5], Profile.from_doc(orjson.loads(_read(path)))))
        except FileNotFoundError:
            continue  # forgotten or replaced between listdir and open
        except (OSError, ValueError, _Fail) as e:  # orjson.JSONDecodeError is a ValueError
            bad.append(f"{path}: {_line(e)}")
    for line in bad[:_SHOWN]:
        print(f"nodewarden profile: skipped {line}", file=sys.stderr)
    if len(bad) > _SHOWN:
        print(f"nodewarden profile: ... and {len(bad) - _SHOWN} more unreadable files skipped", file=sys.stderr)
    return sorted(out, key=lambda sp: sp[1].workload.key)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        data = f.read(_MAX_FILE + 1)
    if len(data) > _MAX_FILE:
        raise _Fail(f"larger than {_MAX_FILE >> 20} MiB")
    return data


def _line(e: BaseException) -> str:
    text = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
    return " ".join(text.split())[:300] or type(e).__name__


def _resolve(found: list[tuple[str, object]], key: str) -> tuple[str, object] | None:
    """The one profile KEY names (its key, a prefix of it, its file name or a prefix of that), None when
    none does; ambiguous is an error."""
    name = os.path.basename(key)
    name = name[:-5] if name.endswith(".json") else name
    for stem, p in found:
        if p.workload.key == key or stem == name:
            return stem, p
    hits = [(s, p) for s, p in found if p.workload.key.startswith(key) or (name and s.startswith(name))]
    if len(hits) > 1:
        some = ", ".join(p.workload.key for _s, p in hits[:3])
        raise _Fail(f"{key!r} matches {len(hits)} profiles ({some}{', ...' if len(hits) > 3 else ''}): give more of it")
    return hits[0] if hits else None


def _must(directory: str, key: str) -> tuple[str, object]:
    hit = _resolve(_read_all(directory), key)
    if hit is None:
        raise _Fail(f"no profile matches {key!r} in {directory} ({_KEY_HINT})")
    return hit


# --- list, show, export --------------------------------------------------------------------------------------

def _summary(stem: str, p, now: float) -> dict:
    return {"key": p.workload.key, "file": stem, "mode": p.mode, "locked_by": p.locked_by, "run_s": p.run_s,
            "stable_s": max(0.0, now - p.stable_since), "revision": p.revision,
            "items": {k: len(p.items.get(k, {})) for k in KINDS},
            "overflow": {k: n for k, n in p.overflow.items() if n},
            "deviations": sum(len(d) for d in p.deviations.values())}


def _list(args, state_dir: str, directory: str) -> int:
    now = time.time()
    rows = [_summary(s, p, now) for s, p in _read_all(directory)]
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(rows, option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    if not rows:
        print(f"no profiles in {directory}")
        return 0
    print(f"{'ID':<{_ID}}  {'MODE':<22} {'RUN':>7} {'STABLE':>7}  {'EXEC':>4} {'EDGE':>4} {'USER':>4} {'PEER':>4} "
          f"{'LSTN':>4} {'WRITE':>5} {'DEV':>4}  KEY")
    for r in rows:
        mode = r["mode"] + (f" ({r['locked_by']})" if r["locked_by"] else "") + (" !" if r["overflow"] else "")
        n = r["items"]
        print(f"{r['file'][:_ID]:<{_ID}}  {mode:<22} {_dur(r['run_s']):>7} {_dur(r['stable_s']):>7}  "
              f"{n['exec']:>4} {n['edge']:>4} {n['user']:>4} {n['peer']:>4} {n['listen']:>4} {n['write']:>5} "
              f"{r['deviations']:>4}  {r['key']}")
    if any(r["overflow"] for r in rows):
        print("!: over its cap on some kind (profiles.max_items): the rest was not learned; `show` says which")
    return 0


def _show(args, state_dir: str, directory: str) -> int:
    stem, p = _must(directory, args.key)
    if args.json:
        sys.stdout.buffer.write(orjson.dumps(p.to_doc(), option=orjson.OPT_INDENT_2) + b"\n")
        return 0
    w, now = p.workload, time.time()
    lock = f", locked by {p.locked_by}" if p.locked_by else ""
    print(f"key:        {w.key}\nfile:       {os.path.join(directory, stem + '.json')}")
    print(f"workload:   namespace {w.namespace or '-'}, kind {w.kind or '-'}, owner {w.owner or '-'}, "
          f"container {w.container}")
    print(f"image:      {w.image or '-'}{f' ({w.image_digest})' if w.image_digest else ''}")
    print(f"mode:       {p.mode}{lock}, since {_when(p.mode_ts)}")
    print(f"learned:    {_dur(p.run_s)} of run time; nothing new for {_dur(p.quiet_run_s)} of run time, "
          f"stable since {_when(p.stable_since)} ({_dur(now - p.stable_since)} ago)")
    print(f"revision:   {p.revision}, created {_when(p.created)}")
    for kind in KINDS:
        _items(kind, p.items.get(kind, {}))
    over = {k: n for k, n in p.overflow.items() if n}
    if over:
        print("overflow (seen, not learned: over profiles.max_items): "
              + ", ".join(f"{k} {n}" for k, n in sorted(over.items())))
    for kind in KINDS:
        if p.deviations.get(kind):
            _items(f"deviations: {kind}", p.deviations[kind])
    return 0


def _items(title: str, items: dict) -> None:
    if not items:
        return
    print(f"{title} ({len(items)}):")
    width = min(60, max(len(k) for k in items))
    for item, (first, last, count) in sorted(items.items()):
        print(f"  {item:<{width}}  {count:>8}x  first {_when(first)}  last {_when(last)}")


def _export(args, state_dir: str, directory: str) -> int:
    if args.key:
        docs = _must(directory, args.key)[1].to_doc()
        n = 1
    else:
        docs = [p.to_doc() for _s, p in _read_all(directory)]
        n = len(docs)
    data = orjson.dumps(docs, option=orjson.OPT_INDENT_2) + b"\n"
    if args.output == "-":
        sys.stdout.buffer.write(data)
        return 0
    tmp = f"{args.output}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, args.output)  # never a half-written export under the name asked for
    except OSError as e:
        _unlink(tmp)
        raise _Fail(f"{args.output}: cannot write: {e.strerror}") from None
    print(f"exported {n} profile{'s' if n != 1 else ''} to {args.output}", file=sys.stderr)
    return 0


# --- lock, unlock, forget, import ----------------------------------------------------------------------------

def _lock(args, state_dir: str, directory: str) -> int:
    return _change(args, state_dir, directory, {"op": "lock", "mode": args.mode}, f"locked in {args.mode}")


def _unlock(args, state_dir: str, directory: str) -> int:
    return _change(args, state_dir, directory, {"op": "unlock"}, "unlocked: learning")


def _forget(args, state_dir: str, directory: str) -> int:
    return _change(args, state_dir, directory, {"op": "forget"}, "forgotten")


def _change(args, state_dir: str, directory: str, req: dict, done: str) -> int:
    agent = read_agent(state_dir)
    hit = _resolve(_read_all(directory), args.key)
    if hit is None and not agent:
        raise _Fail(f"no profile matches {args.key!r} in {directory} ({_KEY_HINT})")
    # The running agent may hold a profile it has not flushed yet: a full key goes to it as given.
    key = hit[1].workload.key if hit else args.key
    ((ok, err),) = _apply(agent, directory, [{**req, "key": key}], getattr(args, "wait", 5.0))
    if not ok:
        raise _Fail(f"{key}: {err}")
    print(f"{key}: {done}{_by(agent, directory)}")
    return 0


def _import(args, state_dir: str, directory: str) -> int:
    from agent.detect.profile.model import Profile

    try:
        data = orjson.loads(_read(args.file))
    except FileNotFoundError:
        raise _Fail(f"{args.file}: no such file") from None
    except (OSError, ValueError, _Fail) as e:
        raise _Fail(f"{args.file}: {_line(e)}") from None
    docs = data if isinstance(data, list) else [data]
    reqs = []
    for i, doc in enumerate(docs):  # every document checked before any is applied: all or nothing
        where = f"{args.file}: profile {i + 1} of {len(docs)}" if isinstance(data, list) else args.file
        if not isinstance(doc, dict):
            raise _Fail(f"{where}: expected a profile document (a JSON object), got {type(doc).__name__}")
        try:
            p = Profile.from_doc(doc)
        except (ValueError, TypeError, KeyError) as e:
            raise _Fail(f"{where}: {_line(e)}") from None
        reqs.append({"op": "import", "key": p.workload.key, "doc": doc})
    if not reqs:
        raise _Fail(f"{args.file}: no profile documents")
    agent = read_agent(state_dir)
    results = _apply(agent, directory, reqs, getattr(args, "wait", 5.0))
    failed = [(r["key"], err) for r, (ok, err) in zip(reqs, results, strict=True) if not ok]
    for key, err in failed[:_SHOWN]:
        print(f"nodewarden profile: {key}: {err}", file=sys.stderr)
    if len(failed) > _SHOWN:
        print(f"nodewarden profile: ... and {len(failed) - _SHOWN} more not imported", file=sys.stderr)
    print(f"imported {len(reqs) - len(failed)} of {len(reqs)} profiles from {args.file}{_by(agent, directory)}")
    return 1 if failed else 0


def _by(agent: dict, directory: str) -> str:
    return f" (by the agent, pid {agent.get('pid')})" if agent else f" (no agent running: written to {directory})"


def _apply(agent: dict, directory: str, reqs: list[dict], wait: float) -> list[tuple[bool, str]]:
    """Each request's (ok, error): through the running agent, else applied to the files here."""
    if agent:
        return _through_agent(agent, directory, reqs, wait)
    from agent.detect.profile.store import ProfileStore, apply_request

    profiles = {p.workload.key: p for _s, p in _read_all(directory)}
    try:
        store = ProfileStore(directory)
    except OSError as e:
        raise _Fail(f"{directory}: {_line(e)}") from None
    out = []
    for req in reqs:
        try:
            ok, err = apply_request(profiles, req)
            if ok and req["op"] == "forget":
                store.remove(req["key"])
            elif ok:
                store.save(profiles[req["key"]])
        except OSError as e:
            ok, err = False, f"cannot write in {directory}: {_line(e)}"
        out.append((ok, err))
    return out


def _through_agent(agent: dict, directory: str, reqs: list[dict], wait: float) -> list[tuple[bool, str]]:
    """Write every request, then wait (all together, up to `wait` s) for the agent's .done answers. A request
    still unanswered is withdrawn when the agent has not taken it yet, so that it does not apply later."""
    rdir = os.path.join(directory, "requests")
    try:
        os.makedirs(rdir, mode=0o700, exist_ok=True)
    except OSError as e:
        raise _Fail(f"{rdir}: cannot create: {e.strerror}") from None
    names = []
    for i, req in enumerate(reqs):
        name = f"{time.time_ns()}-{os.getpid()}-{i}"  # time first: the agent applies them in name order
        tmp = os.path.join(rdir, f".{name}.tmp")  # not *.json until complete: the agent never reads half a file
        try:
            with open(tmp, "wb") as f:
                f.write(orjson.dumps(req))
            os.replace(tmp, os.path.join(rdir, name + ".json"))
        except OSError as e:
            _unlink(tmp)
            for n in names:
                _unlink(os.path.join(rdir, n + ".json"))
            raise _Fail(f"{rdir}: cannot write a request: {e.strerror}") from None
        names.append(name)
    answers: dict[str, tuple[bool, str]] = {}
    deadline = time.monotonic() + max(0.0, wait)
    while True:
        for name in names:
            if name not in answers and (got := _answer(rdir, name)) is not None:
                answers[name] = got
        if len(answers) == len(names) or time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    pid = agent.get("pid")
    for name in names:
        if name in answers:
            continue
        try:
            os.unlink(os.path.join(rdir, name + ".json"))
            answers[name] = (False, f"no answer from the agent (pid {pid}) within {wait:g} s, request withdrawn "
                                    "(does it run with profiles.enabled?)")
        except FileNotFoundError:
            answers[name] = (False, f"the agent (pid {pid}) took the request but did not answer within {wait:g} s")
        except OSError as e:
            answers[name] = (False, f"no answer from the agent (pid {pid}) within {wait:g} s ({e.strerror})")
    return [answers[n] for n in names]


def _answer(rdir: str, name: str) -> tuple[bool, str] | None:
    done = os.path.join(rdir, name + ".done")
    try:
        with open(done, "rb") as f:
            raw = f.read(1 << 16)
        rep = orjson.loads(raw)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None  # being written (the agent's write is not atomic to us): read again on the next poll
    _unlink(done)
    _unlink(os.path.join(rdir, name + ".json"))  # in case the agent leaves it
    if not isinstance(rep, dict):
        return False, f"the agent's answer is not understood: {raw[:80]!r}"
    return bool(rep.get("ok")), str(rep.get("error") or ("" if rep.get("ok") else "refused (no reason given)"))


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _dur(secs: float) -> str:
    s = int(max(0.0, secs))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _when(ts: float) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"
    except (OverflowError, ValueError, OSError):
        return repr(ts)


_COMMANDS = {"list": _list, "show": _show, "lock": _lock, "unlock": _unlock, "forget": _forget,
             "export": _export, "import": _import}
