"""The run-time web-shell check (agent/detect/webshell_watch.py) on real files and real processes, fed
typed events as the pipeline would: what triggers a scan, the bounded queue and its counted drops, the
dedupe, reading through /proc/<pid>/root without following a planted symlink, the alert's fields, and
block (the writer killed, the file renamed aside with mode 000). The kernel side and a real container
are in tests/kernel/test_sensors_close.py and tests/e2e/test_webshell_runtime.py."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import time

import pytest

from agent.config import WebshellConfig
from agent.detect.webshell_watch import RULE_ID, WebshellWatch
from agent.events import AlertEvent, ContainerInfo, EnforcementEvent, Enriched, ExitEvent, FileEvent, Op, ProcInfo
from agent.imagegate import webshell
from agent.imagegate.hashdb import HashDB, write_store
from agent.policy.loader import PolicyError, parse
from agent.policy.webshell import WebshellPolicy
from agent.vocab import Severity

SHELL = b"<?php @eval($_POST['x']); ?>\n"
BENIGN = b"<?php echo 'hello'; ?>\n"
MNTNS = os.stat("/proc/self/ns/mnt").st_ino
O_WRONLY, O_CREAT, O_TRUNC = 0o1, 0o100, 0o1000


def _ev(op: Op, path: str, pid: int | None = None, flags: int = O_WRONLY | O_CREAT | O_TRUNC, ret: int = 3,
        path2: str = "") -> FileEvent:
    pid = pid or os.getpid()
    return FileEvent(op, time.time_ns(), pid, pid, 1, 0, 0, 7, MNTNS, "sh", False, path, path2, ret, flags, 0o644,
                     -100, 3 if op is Op.FILE_CLOSE else -1, -1, -1)


def _en(ev, container: ContainerInfo | None = None) -> Enriched:
    return Enriched(ev, None, None, container)


@pytest.fixture
def bad_hashes(tmp_path):
    store = str(tmp_path / "bad.hashdb")
    write_store(store, {hashlib.sha256(SHELL).digest(): "test: php one-liner"})
    db = HashDB.open(store)
    yield db
    db.close()


def _watch(tmp_path, policy=None, hashdb=None, **cfg) -> tuple[WebshellWatch, list]:
    out: list = []
    roots = (f"{tmp_path}/www/",)
    w = WebshellWatch(WebshellConfig(web_roots=roots, **cfg), out.append, policy=policy, hashdb=hashdb)
    return w, out


def _drain(w: WebshellWatch) -> None:
    while not w._q.empty():
        w.run(w._q.get_nowait())


def test_a_close_under_a_web_root_scans_and_alerts_once(tmp_path, bad_hashes):
    (tmp_path / "www").mkdir()
    shell, benign = tmp_path / "www" / "x.php", tmp_path / "www" / "ok.php"
    shell.write_bytes(SHELL)
    benign.write_bytes(BENIGN)
    w, out = _watch(tmp_path, hashdb=bad_hashes)
    w.observe(_en(_ev(Op.FILE_CLOSE, str(benign))))
    w.observe(_en(_ev(Op.FILE_CLOSE, str(shell))))
    w.observe(_en(_ev(Op.FILE_CLOSE, str(shell))))  # waiting already: one scan
    _drain(w)
    w.observe(_en(_ev(Op.FILE_CLOSE, str(shell))))  # unchanged since its scan: not scanned again
    _drain(w)
    assert [type(r) for r in out] == [AlertEvent]
    a = out[0]
    assert (a.rule_id, a.techniques, a.tactics, a.action) == (RULE_ID, ("T1505.003",), ("persistence",), "alert")
    assert a.subject.event.path == str(shell) and a.severity == Severity.CRITICAL
    assert any(f.rule == "hashdb" and "php one-liner" in f.detail for f in a.findings)
    assert w.counts["coalesced"] == 1 and w.counts["repeat"] == 1 and w.counts["scanned"] == 2
    shell.write_bytes(SHELL + b"\n")  # changed (size, mtime): scanned again, no longer the known hash
    w.observe(_en(_ev(Op.FILE_CLOSE, str(shell))))
    _drain(w)
    assert w.counts["scanned"] == 3


@pytest.mark.skipif(not webshell.is_shell(webshell.scan("x.php", SHELL)), reason="the PHP reader has not landed")
def test_the_detector_names_its_evidence(tmp_path):
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "x.php").write_bytes(SHELL)
    w, out = _watch(tmp_path)
    w.observe(_en(_ev(Op.FILE_CLOSE, f"{tmp_path}/www/x.php")))
    _drain(w)
    (a,) = out
    assert a.findings and any("eval" in f.sink for f in a.findings) and "x.php" in a.output


def test_triggers_open_then_exit_rename_and_globs(tmp_path, bad_hashes):
    (tmp_path / "www").mkdir()
    (tmp_path / "app" / "webapps").mkdir(parents=True)
    w, out = _watch(tmp_path, hashdb=bad_hashes)
    ev = _ev(Op.FILE_OPEN, f"{tmp_path}/app/webapps/s.jsp", pid=4242)  # a glob only: no close event comes
    w.observe(_en(ev))
    w.observe(_en(_ev(Op.FILE_OPEN, f"{tmp_path}/www/r.php", flags=0)))  # a read: nothing
    w.observe(_en(_ev(Op.FILE_OPEN, f"{tmp_path}/elsewhere.php")))  # outside: nothing
    assert w._q.empty() and list(w._pending) == [(4242, f"{tmp_path}/app/webapps/s.jsp")]
    w.observe(_en(ExitEvent(Op.EXIT, time.time_ns(), 4242, 4242, 1, 0, 0, 7, MNTNS, "sh", False, 0, 0)))
    assert not w._pending and w._q.qsize() == 1 and w._q.queue[0].why == "exit"
    w._q.get_nowait()
    (tmp_path / "www" / "moved.php").write_bytes(SHELL)
    w.observe(_en(_ev(Op.FILE_RENAME, "/tmp/a", path2=f"{tmp_path}/www/moved.php", ret=0)))
    _drain(w)
    assert [a.subject.event.op for a in out] == [Op.FILE_RENAME]
    # `cd www && mv /tmp/b.php .`: the new name is relative to mv's cwd (the process table's, from its exec)
    (tmp_path / "www" / "rel.php").write_bytes(SHELL + b"\n\n")
    store = tmp_path / "bad2.hashdb"
    write_store(str(store), {hashlib.sha256(SHELL + b"\n\n").digest(): "test: rel"})
    w, out = _watch(tmp_path, hashdb=HashDB.open(str(store)))
    mv = ProcInfo(pid=os.getpid(), ppid=1, exe="/bin/mv", argv=("mv",), uid=0, start_ns=0, cwd=f"{tmp_path}/www")
    w.observe(Enriched(_ev(Op.FILE_RENAME, "/tmp/b.php", path2="./rel.php", ret=0), mv, None))
    w.observe(Enriched(_ev(Op.FILE_RENAME, "/tmp/c.php", path2="c.php", ret=0), None, None))  # no cwd known
    _drain(w)
    assert [a.findings[-1].path for a in out] == [f"{tmp_path}/www/rel.php"]


def test_linger_scans_a_file_still_open(tmp_path, bad_hashes):
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "l.php").write_bytes(SHELL)
    w, out = _watch(tmp_path, hashdb=bad_hashes, linger_s=0.0)
    w.observe(_en(_ev(Op.FILE_OPEN, f"{tmp_path}/www/l.php")))
    w._linger()
    assert not w._pending and len(out) == 1


def test_a_writer_gone_is_read_through_its_container_or_counted(tmp_path, bad_hashes):
    """The writer has exited (its pid names nothing now): the file is read through a live process of its
    container (the container's init pid); with none left it is counted as unreadable, not silently lost."""
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "x.php").write_bytes(SHELL)
    dead = subprocess.Popen(["true"])
    dead.wait()
    w, out = _watch(tmp_path, hashdb=bad_hashes)
    box = ContainerInfo(id="c" * 64, pid=os.getpid())  # this process stands in for the container's init
    w.observe(_en(_ev(Op.FILE_CLOSE, f"{tmp_path}/www/x.php", pid=dead.pid), box))
    _drain(w)
    assert len(out) == 1 and out[0].subject.container.id == box.id
    w, out = _watch(tmp_path, hashdb=bad_hashes)
    w.observe(_en(_ev(Op.FILE_CLOSE, f"{tmp_path}/www/x.php", pid=dead.pid), ContainerInfo(id="d" * 64)))
    _drain(w)
    assert out == [] and w.drops()["webshell.unreadable"] == 1


def test_a_policy_reload_changes_roots_and_globs(tmp_path):
    w, _ = _watch(tmp_path)
    assert w._matches(f"{tmp_path}/www/a.php") and w._matches("/x/wwwroot/a.aspx")
    w.set_policy(WebshellPolicy(web_roots=("/srv/app/",), globs=()))
    assert not w._matches(f"{tmp_path}/www/a.php") and not w._matches("/x/wwwroot/a.aspx")
    assert w._matches("/srv/app/a.php") and w.settings.max_bytes == WebshellConfig().max_file_bytes


def test_globs_match_as_fnmatch_with_their_literal_prefilter(tmp_path):
    w, _ = _watch(tmp_path)  # the defaults: */webapps/*, */wwwroot/*
    for path, want in [("/opt/app/webapps/x.jsp", True), ("/x/wwwroot/a.aspx", True), ("/webapps/x", True),
                       ("/opt/webapps", False), ("/tmp/a", False)]:
        assert w._matches(path) == want, path
    w.set_policy(WebshellPolicy(globs=("/data/site?/*.php",)))
    assert w.settings.literals == ("/data/site",)
    assert w._matches("/data/site1/a.php") and not w._matches("/data/site1/a.txt")
    w.set_policy(WebshellPolicy(globs=("*",)))  # wildcards only: no literal to look for, the regex decides
    assert w.settings.literals == () and w._matches("/anything")


def test_a_full_queue_drops_and_counts(tmp_path):
    w, _ = _watch(tmp_path, queue_size=2)
    for i in range(5):
        w.observe(_en(_ev(Op.FILE_CLOSE, f"{tmp_path}/www/{i}.php")))
        w.observe(_en(_ev(Op.FILE_CLOSE, f"{tmp_path}/www/{i}.php")))  # again while it waits: one slot
    # 0 and 1 wait (their second close coalesced), each close of 2, 3, 4 found the queue full
    assert w.drops()["webshell.scan"] == 6 and w._q.qsize() == 2 and w.counts["coalesced"] == 2
    _drain(w)
    w.observe(_en(_ev(Op.FILE_CLOSE, f"{tmp_path}/www/0.php")))  # scanned since: queued again
    assert w._q.qsize() == 1
    w2, _ = _watch(tmp_path, pending_max=2)  # remembered opens past the bound are scanned, not forgotten
    for i in range(3):
        w2.observe(_en(_ev(Op.FILE_OPEN, f"{tmp_path}/www/{i}.php")))
    assert len(w2._pending) == 2 and [j.why for j in w2._q.queue] == ["evicted"]


def test_a_planted_symlink_is_never_followed(tmp_path, bad_hashes):
    (tmp_path / "www").mkdir()
    outside = tmp_path / "secret.php"
    outside.write_bytes(SHELL)
    (tmp_path / "www" / "link.php").symlink_to(outside)
    w, out = _watch(tmp_path, policy=WebshellPolicy(action="block", allow_host=True), hashdb=bad_hashes)
    w.observe(_en(_ev(Op.FILE_CLOSE, f"{tmp_path}/www/link.php")))
    _drain(w)
    assert out == [] and w.counts["gone"] == 1 and os.stat(outside).st_mode & 0o777 != 0


def test_a_fifo_or_device_under_a_web_root_is_never_opened(tmp_path, bad_hashes):
    (tmp_path / "www").mkdir()
    os.mkfifo(tmp_path / "www" / "f.php")  # an open for reading would block until a writer came
    os.mknod(tmp_path / "www" / "d.php", 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers
    w, out = _watch(tmp_path, hashdb=bad_hashes)
    for name in ("f.php", "d.php"):
        w.observe(_en(_ev(Op.FILE_CLOSE, f"{tmp_path}/www/{name}")))
    t0 = time.monotonic()
    _drain(w)
    assert time.monotonic() - t0 < 1 and out == [] and w.counts["gone"] == 2 and w.drops()["webshell.unreadable"] == 0


def test_block_kills_the_writer_and_quarantines(tmp_path, bad_hashes):
    (tmp_path / "www").mkdir()
    path = tmp_path / "www" / "x.php"
    writer = subprocess.Popen(["sh", "-c", f"printf '%s' \"$0\" > {path}; exec sleep 60", SHELL.decode()])
    try:
        for _ in range(100):
            if path.exists() and path.read_bytes() == SHELL:
                break
            time.sleep(0.02)
        w, out = _watch(tmp_path, policy=WebshellPolicy(action="block"), hashdb=bad_hashes)
        # outside a container, block needs allow_host: an alert only, nothing killed or moved
        w.observe(_en(_ev(Op.FILE_CLOSE, str(path), pid=writer.pid)))
        _drain(w)
        assert [(type(r), r.action) for r in out] == [(AlertEvent, "alert")] and writer.poll() is None
        w, out = _watch(tmp_path, policy=WebshellPolicy(action="block"), hashdb=bad_hashes)
        box = ContainerInfo(id="c" * 64, name="web")
        w.observe(_en(_ev(Op.FILE_CLOSE, str(path), pid=writer.pid), box))
        _drain(w)
        alert, kill, quarantine = out
        assert alert.action == "kill" and alert.subject.container.id == box.id
        assert isinstance(kill, EnforcementEvent) and (kill.point, kill.outcome) == ("user.kill", "killed")
        assert writer.wait(5) == -9
        assert quarantine.point == "file.quarantine" and quarantine.outcome.startswith("quarantined")
        moved = quarantine.quarantine_path
        assert os.path.dirname(moved) == str(path.parent)
        assert os.path.basename(moved).startswith(".x.php.nw-quarantine-")
        assert not path.exists() and os.stat(moved).st_mode & 0o777 == 0
    finally:
        writer.kill()
        writer.wait()


def test_a_bad_config_web_root_is_refused_at_construction():
    for bad in ("var/www/", "/" + "x" * 200):
        with pytest.raises(ValueError, match="webshell.web_roots"):
            WebshellWatch(WebshellConfig(web_roots=(bad,)), print)


def test_policy_section():
    p = parse("webshell:\n  action: block\n  allow_host: true\n  web_roots: [/var/www/]\n  globs: ['*/x/*']\n"
              "  max_file_bytes: 1000\n").webshell
    assert p == WebshellPolicy("block", True, ("/var/www/",), ("*/x/*",), 1000)
    assert parse("categories: {}\n").webshell == WebshellPolicy()
    with pytest.raises(PolicyError) as e:
        parse("webshell:\n  action: kill\n  web_roots: [www]\n  max_file_bytes: -1\n  allow_host: 2\n  x: 1\n")
    msg = str(e.value)
    for part in ("webshell.action: must be alert or block", "web_roots: 'www'", "max_file_bytes",
                 "allow_host: expected true or false", "unknown key 'x'"):
        assert part in msg
