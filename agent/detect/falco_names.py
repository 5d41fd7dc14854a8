"""Falco's names for what NodeWarden's fields read (agent/detect/fields.py resolves through them).

Facts from Falco's documented field list and its syscall event names; the values are our field
and event names. Pure data: it imports nothing.
"""

# Falco field name -> ours (Falco's documented syscall fields; only those we have the data for).
ALIASES: dict[str, str] = {
    "evt.type": "event.name",
    "evt.rawres": "syscall.return",
    "evt.res": "syscall.result",
    "proc.name": "process.name",
    "proc.exepath": "process.executable.path",
    "proc.exe": "process.argv0",  # Falco: the first argument, usually but not always the program
    "proc.cmdline": "process.command_line",
    "proc.args": "process.args_line",
    "proc.pid": "process.pid",
    "proc.ppid": "process.parent_pid",
    "proc.pname": "process.parent.name",
    "proc.pexepath": "process.parent.executable.path",
    "proc.pexe": "process.parent.executable.path",
    "proc.pcmdline": "process.parent.command_line",
    "proc.aname": "process.ancestors.name",
    "proc.aexepath": "process.ancestors.executable.path",
    "proc.aexe": "process.ancestors.argv0",
    "evt.arg.filename": "process.executable.path",
    "thread.tid": "process.thread.id",
    "proc.cwd": "process.working_directory",
    "proc.is_exe_from_memfd": "process.executable.memfd",
    "proc.is_exe_upper_layer": "process.executable.upper_layer",
    "user.uid": "user.id",
    "user.name": "user.name",
    "group.gid": "group.id",
    "fd.name": "file.resolved_path",
    "fd.directory": "file.directory",
    "fd.filename": "file.name",
    "fd.num": "descriptor.number",
    "fd.type": "descriptor.type",
    "fd.typechar": "descriptor.typechar",
    "fd.sip": "server.address",
    "fd.sport": "server.port",
    "fd.cip": "client.address",
    "fd.cport": "client.port",
    "fd.rip": "network.peer.address",
    "fd.rport": "network.peer.port",
    "fd.lip": "network.local.address",
    "fd.lport": "network.local.port",
    "fd.l4proto": "network.transport",
    "fd.sockfamily": "network.family",
    "fd.ip": "network.address",
    "fd.net": "network.address",
    "fd.port": "network.port",
    "fd.snet": "server.network",
    "fd.cnet": "client.network",
    "fd.rnet": "network.peer.network",
    "fd.lnet": "network.local.network",
    "fd.nameraw": "file.path",
    "evt.arg.path": "file.path",
    "evt.arg.pathname": "file.path",
    "evt.arg.name": "file.path",
    "evt.is_open_write": "file.open.write",
    "evt.is_open_read": "file.open.read",
    "evt.arg.flags": "file.open.flag_names",  # Falco renders them: evt.arg.flags contains O_TRUNC
    "evt.arg.mode": "file.mode_names",
    "container.id": "container.id",  # ours (absent outside a container): `container.id != host` reads as in Falco
    "evt.dir": "syscall.direction",
    "evt.num": "event.number",
    "container.name": "container.name",
    "container.image": "container.image.name",
    "container.image.repository": "container.image.repository",
    "container.image.tag": "container.image.tag",
    "container.image.digest": "container.image.digest",
    "k8s.ns.name": "k8s.namespace.name",
    "k8s.pod.name": "k8s.pod.name",
    "syscall.type": "syscall.name",
    # symlinkat(target, newdirfd, linkpath): what the link points to, and the link's own name
    "evt.arg.target": "file.link.target",
    "evt.arg.linkpath": "file.path",
    # rename(oldpath, newpath) and link(oldpath, newpath)
    "evt.arg.oldpath": "file.old_path",
    "evt.arg.newpath": "file.new_path",
    "evt.arg.domain": "network.socket.domain",
    # ptrace: Falco renders the request by name (`evt.arg.request contains PTRACE_ATTACH`); our
    # ptrace.request is the kernel's number, which is not Falco's own numbering of it
    "evt.arg.request": "ptrace.request_name",
}

# Falco's evt.type values (syscall names) -> our event names. A syscall we have no event for
# maps to nothing: a comparison with it can never be true (the compiler says so in its notes).
EVENT_TYPES: dict[str, str] = {
    **dict.fromkeys(("execve", "execveat"), "process.exec"),
    **dict.fromkeys(("clone", "clone3", "fork", "vfork"), "process.fork"),
    **dict.fromkeys(("procexit", "exit", "exit_group"), "process.exit"),
    **dict.fromkeys(("open", "openat", "openat2", "creat"), "file.open"),
    **dict.fromkeys(("unlink", "unlinkat"), "file.unlink"),
    **dict.fromkeys(("rename", "renameat", "renameat2"), "file.rename"),
    **dict.fromkeys(("chmod", "fchmod", "fchmodat", "fchmodat2"), "file.chmod"),
    **dict.fromkeys(("chown", "fchown", "fchownat", "lchown"), "file.chown"),
    "connect": "network.connect",
    **dict.fromkeys(("accept", "accept4"), "network.accept"),
    "bind": "network.bind",
    "listen": "network.listen",
    # The events below are the calls a rule cares about, not every call of the syscall: our
    # dup is a socket onto fd 0-2, socket is a packet or raw one, sendto one with a destination on
    # UDP, bpf a program load. One event covers a family (setuid: setreuid, setresuid, setfsuid):
    # syscall.name tells them apart.
    **dict.fromkeys(("symlink", "symlinkat"), "file.symlink"),
    **dict.fromkeys(("link", "linkat"), "file.link"),
    **dict.fromkeys(("dup", "dup2", "dup3"), "network.dup"),
    "socket": "network.socket",
    **dict.fromkeys(("sendto", "sendmsg"), "network.sendto"),
    "ptrace": "system.ptrace",
    **dict.fromkeys(("setuid", "setreuid", "setresuid", "setfsuid"), "system.setuid"),
    **dict.fromkeys(("setgid", "setregid", "setresgid", "setfsgid"), "system.setgid"),
    "capset": "system.capset",
    **dict.fromkeys(("init_module", "finit_module"), "system.module_load"),
    "mount": "system.mount",
    **dict.fromkeys(("umount", "umount2"), "system.umount"),
    "unshare": "system.unshare",
    "setns": "system.setns",
    "bpf": "system.bpf_load",
    "memfd_create": "system.memfd_create",
}
