"""The rules' per-kind pre-condition (agent/detect/index.py, 6): it keeps every event a rule of its
kind matches (on fixed and random rule sets), the compiled one (agent/detect/_prefilter.c, built
here into a temporary directory) keeps exactly what the Python one keeps, and the detector's
alerts are the same with either and with none."""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import subprocess
import sys

import pytest

from agent.detect import native
from agent.detect.condition import compile
from agent.detect.engine import build
from agent.detect.index import RuleIndex, _access, _python, compiled_tests
from agent.events import EVENT_NAMES, Op
from tests.unit.detect_events import connect_en, enriched, exec_en, file_rec, net_rec, open_en
from tests.unit.test_detect_index import LISTS, MACROS, RULES, _events, _random_condition, _want

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def compiled_module(tmp_path_factory):
    """The C file compiled for this test run (whatever build/native holds), loaded; under
    NODEWARDEN_RULES_SO (the sanitizer run below) that object instead."""
    so = os.environ.get("NODEWARDEN_RULES_SO") or native.build(out_dir=str(tmp_path_factory.mktemp("nwrules")))
    return native.load(so)


def test_these_tests_pass_with_the_compiled_code_under_asan_and_ubsan(tmp_path):
    """The tests of this file again, in a child that loads an AddressSanitizer + UBSan build of
    _prefilter.c (gcc's libasan preloaded, PYTHONMALLOC=malloc so ASan sees every object's memory, leak
    detection off: CPython frees little at exit), as tests/unit/test_native_sanitize.py does for the
    decoders: an out-of-bounds read, a use-after-free or undefined behaviour aborts it with its report."""
    if os.environ.get("NODEWARDEN_RULES_SO"):
        pytest.skip("already the sanitizer run")
    lib = subprocess.run(["gcc", "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip() \
        if shutil.which("gcc") else ""
    if not (os.path.isabs(lib) and os.path.exists(lib)):
        pytest.skip("no gcc libasan (scripts/setup.sh installs gcc)")
    so = native.build(out_dir=str(tmp_path), sanitize=True)
    env = dict(os.environ, LD_PRELOAD=lib, NODEWARDEN_RULES_SO=so, PYTHONMALLOC="malloc",
               ASAN_OPTIONS="detect_leaks=0:abort_on_error=1", UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    done = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", __file__],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    tail = (done.stdout + done.stderr)[-4000:]
    assert done.returncode == 0, tail
    assert "ERROR: AddressSanitizer" not in tail and "runtime error:" not in tail, tail
    assert " passed" in done.stdout, tail


_PATHS = ["/etc/passwd", "/etc/cron.d/job", "/etc", "/etcx/a", "/usr/bin/ls", "/usr/binx", "/usr/lib/x.so",
          "/tmp/x", "/root/.bash_history", "/home/u/.bash_history", "out/a.tmp", "/", "", "/var/lib/a/b.log",
          "/proc/1/environ", "/dev/shm/x", "/home/u/.ssh/id_rsa", "/etc/cron.daily/x", "/e", "relative",
          "/usr/b", "/usr/bin/", "é/ü", "/et/ç"]


def _many_events(rng: random.Random) -> list:
    events = list(_events())
    for path in _PATHS:
        for flags in (os.O_RDONLY, os.O_WRONLY, os.O_RDWR | os.O_TRUNC):
            events.append(open_en(path, flags=flags, comm=rng.choice([b"cat", b"bash", b"dpkg", b"curl"]),
                                  uid=rng.choice([0, 1000]), container=rng.choice([None, events[0].container])))
        events.append(enriched(file_rec(Op.FILE_RENAME, path, rng.choice(_PATHS), comm=b"mv")))
        events.append(enriched(file_rec(Op.FILE_UNLINK, path, comm=b"rm", uid=0)))
        events.append(exec_en(path or "/x", [path.rsplit("/", 1)[-1] or "x"], comm=rng.choice([b"bash", b"nc", b"x"])))
    # a relative open resolved against the cwd (enrich's path_resolved): read by file.name and fd.name
    events += [dataclasses.replace(open_en("x", flags=os.O_WRONLY), path_resolved=p) for p in _PATHS if p]
    for port in (22, 443, 3333, 4444):
        events.append(connect_en("10.0.0.1", port, comm=rng.choice([b"curl", b"bash"])))
        events.append(enriched(net_rec(Op.NET_BIND, "0.0.0.0", port, comm=b"python3")))
    return events


def _check_index(index: RuleIndex, compiled, events, mod) -> int:
    """Every event a rule matches is kept; the compiled keep() keeps what the Python one keeps.
    Returns how many events the pre-conditions dropped."""
    dropped = 0
    for op in EVENT_NAMES:
        pre = index.prefilter(op)
        if pre is None:
            continue
        mine = [en for en in events if en.event.op is op]
        where = list(range(len(mine)))
        kept = pre(mine, where)
        dropped += len(mine) - len(kept)
        for i, en in enumerate(mine):
            if _want(compiled, en):
                assert i in kept, (EVENT_NAMES[op], en.event)
        assert mod.keep(mine, where, index.prefilter_spec(op)) == kept, EVENT_NAMES[op]
        # through select with a memo: the same, the first time (misses) and again (hits)
        spec = index.prefilter_spec(op)
        tables = ({int(op): spec}, {int(op): spec})  # host and container groups alike
        memo = mod.memo(tables)
        for _ in range(2):
            assert sorted(i for g in mod.select(mine, tables, memo) for i in g[3]) == kept, EVENT_NAMES[op]
    return dropped


def test_the_pre_condition_keeps_every_match_on_fixed_rules(compiled_module):
    compiled = [compile(r, MACROS, LISTS) for r in RULES]
    index = RuleIndex(compiled)
    events = _many_events(random.Random(1))
    _check_index(index, compiled, events, compiled_module)
    assert index.prefilter(Op.NET_CONNECT) is not None
    # "proc.name = bash" holds on every kind: the name is the anchor, an open by cat is dropped
    pre = index.prefilter(Op.FILE_OPEN)
    assert pre is not None and pre([open_en("/var/lib/a", comm=b"cat")], [0]) == []


def test_the_pre_condition_keeps_every_match_on_random_rule_sets(compiled_module):
    rng = random.Random(17)
    events = _many_events(rng)
    dropped = 0
    for _ in range(60):
        compiled = [compile(_random_condition(rng), MACROS, LISTS) for _ in range(rng.randint(1, 40))]
        index = RuleIndex(compiled)
        dropped += _check_index(index, compiled, events, compiled_module)
        for en in events:  # and the index behind it still agrees with each rule
            assert index.match(en) == _want(compiled, en)
    assert dropped > 0  # the pre-conditions did reject events: the agreement is not vacuous


def test_a_kind_with_a_rule_that_has_no_test_to_anchor_on_has_no_pre_condition():
    index = RuleIndex([compile("evt.type = open and not proc.name = cat"),
                       compile("evt.type = open and fd.name startswith /etc")])
    assert index.prefilter(Op.FILE_OPEN) is None
    index = RuleIndex([compile("evt.type = open and (fd.name startswith /etc or proc.name = cat)")])
    pre = index.prefilter(Op.FILE_OPEN)  # an `or` whose alternatives both have one: the union
    assert pre([open_en("/etc/x"), open_en("/tmp/x", comm=b"cat"), open_en("/tmp/x", comm=b"ls")], [0, 1, 2]) == [0, 1]


def test_a_guard_on_the_open_mode_drops_reads_for_the_rules_about_writes(compiled_module):
    compiled = [compile("open_write and fd.name startswith /etc", MACROS, LISTS),
                compile("evt.type = open and evt.is_open_read = true and fd.name = /etc/shadow", MACROS, LISTS)]
    index = RuleIndex(compiled)
    events = [open_en("/etc/passwd"), open_en("/etc/passwd", flags=os.O_WRONLY), open_en("/etc/shadow"),
              open_en("/tmp/x", flags=os.O_WRONLY)]
    where = list(range(len(events)))
    assert index.prefilter(Op.FILE_OPEN)(events, where) == [1, 2]
    assert compiled_module.keep(events, where, index.prefilter_spec(Op.FILE_OPEN)) == [1, 2]
    assert [i for i, en in enumerate(events) if index.match(en)] == [1, 2]


def test_an_event_whose_test_raises_is_kept_for_the_node(compiled_module):
    def broken(en):
        raise RuntimeError("cannot read")

    tests = ((broken, frozenset({"x"}), None, None, None, None, None, None),)
    events = [open_en("/etc/x"), open_en("/tmp/y")]
    assert _python(tests)(events, [0, 1]) == [0, 1]
    assert compiled_module.keep(events, [0, 1], compiled_tests(tests)) == [0, 1]
    # a value of the wrong type for a string test: the node judges it, as Python's startswith would raise
    odd = ((lambda en: 5, None, None, ("/e",), None, None, None, None),)
    assert _python(odd)(events, [0]) == compiled_module.keep(events, [0], compiled_tests(odd)) == [0]


def test_the_compiled_reader_follows_the_fast_getters_text():
    from agent.detect import fields

    assert _access(fields.FIELDS["file.path"].fast) == ((("event", "path"),), 0)
    assert _access(fields.FIELDS["file.name"].fast) == ((("path_resolved",), ("event", "path")), 1)
    assert _access(fields.FIELDS["file.target.path"].fast) == ((("event", "path2"),), 2)
    assert _access(fields.FIELDS["file.open.write"].fast) == ((("event", "flags"),), 4, 3, 0)
    names = fields.FIELDS["file.open.flag_names"].get
    assert _access(names) is names  # a function it does not read: the getter is called


def test_bundled_rules_compiled_and_python_select_agree_and_drop_most_of_a_benign_mix(compiled_module):
    det, errors = build(None)
    assert not errors
    events = _many_events(random.Random(3))
    for batch in (events, events[::-1], events[:1], []):
        py = det._select(batch)
        c = [(b, op, n, kept) for b, op, n, kept, _ in compiled_module.select(batch, det._tables) if n]
        assert c == [(b, op, n, kept) for b, op, n, kept, _ in py]
        for boxed, op, _, kept, _ in py:  # every event a rule in scope matches is kept
            ridx, scoped = det._ridx[boxed]
            for i, en in enumerate(batch):
                if en.event.op is op and (en.container is not None) is boxed and ridx.match(en):
                    assert i in kept
    # the file opens of the bench's mix (logs written under /var/lib, temporary files) skip the nodes
    opens = [open_en(f"/var/lib/app/{k}.log", flags=os.O_WRONLY | os.O_APPEND) for k in range(20)]
    ((_, _, n, kept, _),) = compiled_module.select(opens, det._tables)
    assert n == 20 and kept == []
    attack = [open_en("/etc/cron.d/job", flags=os.O_WRONLY, container=None)]
    assert [g[3] for g in compiled_module.select(attack, det._tables)] == [[0]]


def test_the_detector_raises_the_same_alerts_and_counts_with_the_pre_condition_or_without():
    """A mix through evaluate_batch (grouped, the pre-condition: compiled where built) and through
    evaluate (each event's node, no pre-condition): the same alerts in the same order, the same
    evaluation counts per rule."""
    rng = random.Random(5)
    events = _many_events(rng)
    rng.shuffle(events)
    batched, single = build(None)[0], build(None)[0]
    got_b, got_s = [], []
    for k in range(0, len(events), 50):
        batch = events[k : k + 50]
        got_b += [(k + i, a.rule_id, a.output) for i, alerts in batched.evaluate_batch(batch) for a in alerts]
        got_s += [(k + i, a.rule_id, a.output) for i, en in enumerate(batch) for a in single.evaluate(en)]
    assert got_b == got_s and len({r for _, r, _ in got_b}) >= 5  # several rules fired: not vacuous
    assert batched.evaluations == single.evaluations


def _selection(mod, det, batch, memo=None):
    args = (batch, det._tables) if memo is None else (batch, det._tables, memo)
    return [(b, op, n, kept) for b, op, n, kept, _ in mod.select(*args) if n]


def test_the_memo_gives_the_same_selection_and_remembers_repeats(compiled_module):
    """The bundled rules over a shuffled mix in batches, three times: with a memo the same groups and
    kept positions as without; the repeats are answered from it."""
    det = build(None)[0]
    rng = random.Random(11)
    events = _many_events(rng)
    memo = compiled_module.memo(det._tables)
    for _ in range(3):
        rng.shuffle(events)
        for k in range(0, len(events), 64):
            batch = events[k : k + 64]
            assert _selection(compiled_module, det, batch, memo) == _selection(compiled_module, det, batch)
    info = compiled_module.memo_info(memo)
    assert info["hits"] > info["misses"] > 0 and 0 < info["entries"] <= info["misses"]


def test_the_memo_is_bounded_and_keeps_its_answers_under_eviction(compiled_module):
    """Thousands of distinct paths (more than a kind's slots), some past the key's length bound: the
    memo holds at most its slots per kind met, and still answers as the tests do."""
    det = build(None)[0]
    memo = compiled_module.memo(det._tables)
    names = [f"/var/lib/app/{k}.log" for k in range(3000)] + ["/etc/cron.d/job", "/root/.bash_history"]
    names += ["/etc/cron.d/" + "x" * 300, "/var/" + "y" * 300]  # too long for a key: tested, never kept
    events = [open_en(p, flags=os.O_WRONLY, container=None) for p in names]
    for _ in range(2):
        for k in range(0, len(events), 256):
            batch = events[k : k + 256]
            assert _selection(compiled_module, det, batch, memo) == _selection(compiled_module, det, batch)
    info = compiled_module.memo_info(memo)
    assert info["kinds"] == 1 and info["entries"] <= info["slots"] and info["max_chars"] < 300
    long_only = compiled_module.memo(det._tables)
    assert _selection(compiled_module, det, events[-2:], long_only) == [(False, Op.FILE_OPEN, 2, [0])]
    assert compiled_module.memo_info(long_only)["entries"] == 0


def test_the_memo_leaves_out_what_it_cannot_compare_and_what_raised(compiled_module):
    """A value of another type than str, int, bool or None (a str subclass) and a read that raises are
    tested each time and never kept; a memo answers only for its own tables."""
    class Path(str):
        pass

    det = build(None)[0]
    memo = compiled_module.memo(det._tables)
    odd = [dataclasses.replace(open_en("x", flags=os.O_WRONLY), path_resolved=Path("/etc/cron.d/job")),
           dataclasses.replace(open_en("x", flags=os.O_WRONLY), path_resolved=Path("/tmp/x"))]
    want = _selection(compiled_module, det, odd)
    assert want == _selection(compiled_module, det, odd, memo) == _selection(compiled_module, det, odd, memo)
    assert compiled_module.memo_info(memo)["entries"] == 0
    tests = ((_ChainRead(), frozenset({"x"}), None, None, None, None, None, None),)
    reads, spec = compiled_tests(tests)
    kind = {int(Op.FILE_OPEN): ((((("event", "no_such_field"),), 0),), spec)}
    tables = (kind, kind)
    raised = compiled_module.memo(tables)
    events = [open_en("/etc/x"), open_en("/tmp/y")]
    for _ in range(2):  # the read raises: kept for the node, as without a memo
        assert [g[3] for g in compiled_module.select(events, tables, raised)] == [[0, 1]]
    assert compiled_module.memo_info(raised)["entries"] == 0
    with pytest.raises(ValueError):
        compiled_module.select(events, det._tables, raised)


class _ChainRead:
    """A stand-in getter: the test above gives the compiled code its read as a chain directly."""

    def __call__(self, en):
        return en.event.no_such_field


def test_the_memo_forgets_a_kind_whose_spec_was_replaced(compiled_module):
    """The memo answers for its tables' specs: a kind whose spec is replaced in them gets the new spec's
    answers, not the remembered ones."""
    index = RuleIndex([compile("evt.type = open and fd.name startswith /etc")])
    other = RuleIndex([compile("evt.type = open and fd.name startswith /tmp")])
    kind = {int(Op.FILE_OPEN): index.prefilter_spec(Op.FILE_OPEN)}
    tables = (kind, kind)
    memo = compiled_module.memo(tables)
    events = [open_en("/etc/x"), open_en("/tmp/y")]
    for _ in range(2):
        assert [g[3] for g in compiled_module.select(events, tables, memo)] == [[0]]
    kind[int(Op.FILE_OPEN)] = other.prefilter_spec(Op.FILE_OPEN)
    for _ in range(2):
        assert [g[3] for g in compiled_module.select(events, tables, memo)] == [[1]]
    assert compiled_module.memo_info(memo)["entries"] == 2
