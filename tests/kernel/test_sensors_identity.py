"""What runs, where, and who started it (issue 10): mm->exe_file's path and facts, the cwd, the
watch list of sensitive reads, ancestry. Every field checked against what the test itself knows."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest


def _exec_of(agent, pid, **kw):
    return agent.wait_for(lambda r: r["event.name"] == "process.exec" and r["process.pid"] == pid, **kw)


def _child(code: str, cwd: str | None = None) -> int:
    p = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], check=True, capture_output=True, text=True,
                       cwd=cwd)
    return int(p.stdout.strip().splitlines()[-1])


def test_exe_kernel_path_relative_exec_and_cwd(agent, tmp_path):
    true = os.path.realpath("/bin/true")  # /bin is a symlink on Debian: the kernel names the real file
    p = subprocess.Popen(["./" + os.path.basename(true)], cwd=os.path.dirname(true))
    p.wait()
    (ex,) = _exec_of(agent, p.pid)
    assert ex["process.executable.path"] == "./" + os.path.basename(true)  # what execve was given
    assert ex["process.executable.kernel_path"] == true
    assert ex["process.working_directory"] == os.path.dirname(true)
    st = os.stat(true)
    assert (ex["process.executable.inode"], ex["process.executable.device"]) == (st.st_ino, st.st_dev)
    assert ex["process.executable.mount_id"] == _mount_id(os.path.dirname(true))
    for flag in ("memfd", "deleted", "upper_layer"):
        assert f"process.executable.{flag}" not in ex  # present only when true

    d = tmp_path / "deep" / "er"
    d.mkdir(parents=True)
    q = subprocess.Popen(["/bin/true"], cwd=d)
    q.wait()
    (ex,) = _exec_of(agent, q.pid)
    assert ex["process.working_directory"] == str(d)


def _mount_id(path: str) -> int:
    """The mount id of the mount `path` lives on (the longest mount point prefix in mountinfo)."""
    best, mid = "", 0
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            mp = parts[4]
            if (path == mp or path.startswith(mp.rstrip("/") + "/")) and len(mp) >= len(best):
                best, mid = mp, int(parts[0])
    return mid


def test_memfd_exec_reads_as_the_kernel_names_it(agent):
    pid = _child("""
        import os, sys
        fd = os.memfd_create("nwtest", 0)
        with open("/bin/true", "rb") as f:
            os.write(fd, f.read())
        pid = os.fork()
        if pid == 0:
            os.execve(fd, ["nwtest"], {})
        os.waitpid(pid, 0)
        print(pid)
    """)
    (ex,) = _exec_of(agent, pid)
    assert ex["process.executable.path"].startswith("/dev/fd/") or "/fd/" in ex["process.executable.path"]
    assert ex["process.executable.kernel_path"] == "/memfd:nwtest (deleted)"
    assert ex["process.executable.memfd"] is True and ex["process.executable.deleted"] is True
    assert "process.executable.upper_layer" not in ex


def test_deleted_file_exec(agent, tmp_path):
    path = tmp_path / "gone"
    shutil.copy("/bin/true", path)
    pid = _child(f"""
        import os
        fd = os.open("{path}", os.O_RDONLY)
        os.unlink("{path}")
        pid = os.fork()
        if pid == 0:
            os.execve(fd, ["gone"], {{}})
        os.waitpid(pid, 0)
        print(pid)
    """)
    (ex,) = _exec_of(agent, pid)
    assert ex["process.executable.kernel_path"] == f"{path} (deleted)"
    assert ex["process.executable.deleted"] is True and "process.executable.memfd" not in ex


@pytest.fixture
def overlay(tmp_path):
    dirs = {n: tmp_path / n for n in ("lower", "upper", "work", "merged")}
    for d in dirs.values():
        d.mkdir()
    shutil.copy("/bin/true", dirs["lower"] / "from_image")
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    f"lowerdir={dirs['lower']},upperdir={dirs['upper']},workdir={dirs['work']}", str(dirs["merged"])],
                   check=True)
    try:
        yield dirs["merged"]
    finally:
        subprocess.run(["umount", str(dirs["merged"])], check=True)


def test_overlay_upper_layer_flag(agent, overlay):
    shutil.copy("/bin/true", overlay / "dropped")  # written after the mount: lives in the upper layer
    os.chmod(overlay / "dropped", 0o755)
    img = subprocess.Popen([str(overlay / "from_image")])
    img.wait()
    new = subprocess.Popen([str(overlay / "dropped")], cwd=overlay)
    new.wait()
    (a,) = _exec_of(agent, img.pid)
    (b,) = _exec_of(agent, new.pid)
    # The path crosses the overlay's mount point (and tmp's) to the root, as /proc/<pid>/exe does.
    assert a["process.executable.kernel_path"] == str(overlay / "from_image")
    assert b["process.executable.kernel_path"] == str(overlay / "dropped")
    assert "process.executable.upper_layer" not in a
    assert b["process.executable.upper_layer"] is True
    assert b["process.working_directory"] == str(overlay)
    assert a["process.executable.mount_id"] == b["process.executable.mount_id"] == _mount_id(str(overlay))


def test_watched_reads_reported_unwatched_not(agent, tmp_path):
    home = f"/home/nwtest-{os.getpid()}"
    os.makedirs(f"{home}/.ssh", exist_ok=True)
    for name in (f"{home}/.ssh/id_test", f"{home}/notes"):
        with open(name, "w") as f:
            f.write("x")
    try:
        pid = _child(f"""
            import os
            for p in ("/etc/shadow", "/etc/hostname", "/proc/self/environ", "/proc/self/status",
                      "{home}/.ssh/id_test", "{home}/notes", "/etc/sudoers.d/"):
                try:
                    os.close(os.open(p, os.O_RDONLY))
                except OSError:
                    pass
            print(os.getpid())
        """)
        opens = agent.wait_for(lambda r: r["event.name"] == "file.open" and r["process.pid"] == pid, count=3)
        agent.wait_for(lambda r: r["event.name"] == "process.exit" and r["process.pid"] == pid)
    finally:
        shutil.rmtree(home)
    opens = agent.find(lambda r: r["event.name"] == "file.open" and r["process.pid"] == pid)
    paths = [r["file.path"] for r in opens]
    # /proc/ is ignored, but the watch list wins for environ; a failed attempt is reported too
    assert paths == ["/etc/shadow", "/proc/self/environ", f"{home}/.ssh/id_test", "/etc/sudoers.d/"]
    for r in opens:
        assert r["file.open.flags"] & os.O_ACCMODE == os.O_RDONLY
        exists = os.path.exists(r["file.path"]) or r["file.path"].startswith(home)  # home: removed by now
        assert (r["syscall.return"] >= 0) == exists


def test_grandchild_names_parent_and_grandparent(agent, tmp_path):
    """sh -> sh -> python: the grandchild's records carry its ancestry, parent first; a relative open is
    resolved against the cwd the process started in."""
    (tmp_path / "in").mkdir()
    (tmp_path / "open.py").write_text(
        "import os; os.close(os.open('../out.txt', os.O_WRONLY | os.O_CREAT, 0o600)); print(os.getpid())\n")
    (tmp_path / "inner.sh").write_text(f"cd {tmp_path}/in && {sys.executable} {tmp_path}/open.py; true\n")
    outer = subprocess.run(["/bin/sh", "-c", f"/bin/sh {tmp_path}/inner.sh; true"], check=True,
                           capture_output=True, text=True)
    pid = int(outer.stdout.strip())
    (op,) = agent.wait_for(lambda r: r["event.name"] == "file.open" and r["process.pid"] == pid)
    names = op["process.ancestors.name"]
    exes = op["process.ancestors.executable.path"]
    assert names[:3] == ["sh", "sh", os.path.basename(sys.executable)[:15]]  # parent, grandparent, the test
    assert exes[:2] == ["/bin/sh", "/bin/sh"]
    assert len(names) == len(exes) <= 8
    assert op["file.path"] == "../out.txt" and op["file.resolved_path"] == str(tmp_path / "out.txt")
    (ex,) = _exec_of(agent, pid)
    assert ex["process.ancestors.name"][:2] == ["sh", "sh"]
    assert ex["process.working_directory"] == str(tmp_path / "in")


def test_watch_list_changes_at_run_time_short_prefixes_and_patterns(tmp_path):
    from agent.config import ProbeConfig
    from agent.events import Op
    from agent.sensors.common import BootClock
    from agent.sensors.loader import ProbeSet

    (tmp_path / "sec").mkdir()
    for name in ("sec/a", "other"):
        (tmp_path / name).write_text("x")
    files = (f"{tmp_path}/sec/a", f"{tmp_path}/other", "/etc/hostname", "/proc/self/environ")
    ps = ProbeSet(ProbeConfig(families=("file",), watch_reads=(f"{tmp_path}/sec/", "/etc/")))
    ps.start()
    reader, clock = ps.reader(), BootClock()
    try:
        def opened():
            p = subprocess.Popen([sys.executable, "-c", "import os, sys; sys.stdin.read(1)\n"
                                  f"for f in {files!r}: os.close(os.open(f, os.O_RDONLY))"], stdin=subprocess.PIPE)
            ps.set_target_tgid(p.pid)
            p.communicate(b"x")
            assert p.returncode == 0
            evs = [ps.decoders[raw[0]](raw, clock) for raw in reader.read(100000)]
            return [e.path for e in evs if e.pid == p.pid and e.op == Op.FILE_OPEN and e.path in files]

        # "/etc/" is shorter than the 8-byte pre-filter: it still matches (CFG_WATCH_SHORT)
        assert opened() == [f"{tmp_path}/sec/a", "/etc/hostname"]
        ps.set_watched_reads([f"{tmp_path}/sec/"])
        assert opened() == [f"{tmp_path}/sec/a"]
        ps.set_watched_reads(["/proc/*/environ"])
        assert opened() == ["/proc/self/environ"]
    finally:
        reader.close()
        ps.stop()


def test_relative_paths_resolved_with_the_cwd_at_the_call(agent, tmp_path):
    """The kernel sends the cwd with a relative path, so a chdir the agent never saw does not matter."""
    (tmp_path / "sub").mkdir()
    pid = _child(f"""
        import os
        os.chdir("{tmp_path}/sub")
        os.close(os.open("rel.txt", os.O_WRONLY | os.O_CREAT, 0o600))
        os.unlink("./rel.txt")
        print(os.getpid())
    """, cwd="/")
    (op,) = agent.wait_for(lambda r: r["event.name"] == "file.open" and r["process.pid"] == pid)
    (un,) = agent.wait_for(lambda r: r["event.name"] == "file.unlink" and r["process.pid"] == pid)
    assert (op["file.path"], op["file.resolved_path"]) == ("rel.txt", f"{tmp_path}/sub/rel.txt")
    assert (un["file.path"], un["file.resolved_path"]) == ("./rel.txt", f"{tmp_path}/sub/rel.txt")
    assert "file.target.path" not in op


def test_a_path_deeper_than_the_walk_is_flagged_truncated(agent, tmp_path):
    deep = tmp_path.joinpath(*["d"] * 40)  # more components than NW_PATH_DEPTH (32)
    deep.mkdir(parents=True)
    shutil.copy("/bin/true", deep / "t")
    p = subprocess.Popen([str(deep / "t")], cwd=tmp_path)
    p.wait()
    (ex,) = _exec_of(agent, p.pid)
    assert ex["event.truncated"] is True
    assert str(deep / "t").endswith(ex["process.executable.kernel_path"])  # the top components are missing
    assert ex["process.working_directory"] == str(tmp_path)


def test_write_watch_list_wins_over_ignored_prefixes_for_writes_only():
    """probes.watch_writes: a writing open of a kernel knob under the ignored /proc/ is sent (opened for
    write, never written: nothing on the machine changes); a read-only open of it is not; a writing open
    of another ignored /proc/sys file is not. A path on both lists is sent for both."""
    from agent.config import ProbeConfig
    from agent.events import Op
    from agent.sensors.common import BootClock
    from agent.sensors.loader import ProbeSet

    knob, other = "/proc/sys/kernel/core_pattern", "/proc/sys/kernel/hostname"
    plan = ((knob, os.O_WRONLY), (knob, os.O_RDONLY), (other, os.O_WRONLY))
    ps = ProbeSet(ProbeConfig(families=("file",), watch_writes=(knob,)))
    ps.start()
    reader, clock = ps.reader(), BootClock()
    try:
        def opened():
            code = ("import os, sys; sys.stdin.read(1)\n"
                    f"for f, how in {plan!r}: os.close(os.open(f, how))")
            p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
            ps.set_target_tgid(p.pid)
            p.communicate(b"x")
            assert p.returncode == 0
            evs = [ps.decoders[raw[0]](raw, clock) for raw in reader.read(100000)]
            return [(e.path, e.flags & 3) for e in evs if e.pid == p.pid and e.op == Op.FILE_OPEN]

        assert opened() == [(knob, os.O_WRONLY)]
        ps.set_watched_reads([knob])  # now on both lists
        assert opened() == [(knob, os.O_WRONLY), (knob, os.O_RDONLY)]
        ps.set_watched_reads([], writes=())
        assert opened() == []
    finally:
        reader.close()
        ps.stop()
