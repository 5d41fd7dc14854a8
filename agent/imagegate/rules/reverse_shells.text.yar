// Reverse-shell one-liners in scripts: a shell wired to a network socket.

rule ReverseShell_OneLiner
{
    meta:
        category = "malware"
        severity = "high"
        description = "reverse-shell one-liner (interactive shell wired to a TCP connection)"
    strings:
        $bash_tcp = /(ba)?sh\s+-i\s*[>&]{1,3}\s*\/dev\/(tcp|udp)\/[A-Za-z0-9.\-]+\/[0-9]{1,5}/
        $dev_tcp_exec = /exec\s+[0-9]+<>\s*\/dev\/tcp\/[A-Za-z0-9.\-]+\/[0-9]{1,5}/
        $nc_e = /\b(nc|ncat|netcat)(\.traditional)?\s+(-[a-z]+\s+)*-(e|c)\s*\/bin\/(ba)?sh/
        $nc_pipe = /\/bin\/(ba)?sh\s+-i\s+2>&1\s*\|\s*(nc|ncat|netcat)\s/
        $fifo = /mkfifo\s+\/tmp\/[A-Za-z0-9_.]+\s*;[^\n]{0,80}\b(nc|ncat|netcat)\s/
        $socat = /socat\s+[^\n]{0,40}exec:['"]?(\/bin\/)?(ba)?sh\s+-li?/ nocase
        $py = /socket\.socket\([^\n]{0,200}\.connect\(\([^\n]{0,200}os\.dup2\([^\n]{0,200}(\/bin\/(ba)?sh|pty\.spawn)/
        $perl = /use\s+Socket;[^\n]{0,300}open\(STDIN,\s*">&S"\)[^\n]{0,200}exec\(\s*"\/bin\/(ba)?sh/
        $php = /fsockopen\([^\n]{0,200}(exec|shell_exec|system|passthru|proc_open)\(\s*["']\/bin\/(ba)?sh\s+-i/
    condition:
        filesize < 5MB and any of them
}
