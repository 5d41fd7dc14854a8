// Web shells: server-side pages that run what a request tells them to: a request parameter flowing
// into a command or code execution. Run on web pages only (see rules/README).

rule Webshell_PHP
{
    meta:
        category = "malware"
        severity = "critical"
        description = "PHP web shell (request input passed to code or command execution)"
    strings:
        $php = "<?php" nocase
        $exec = /(eval|assert|system|passthru|shell_exec|popen|proc_open|pcntl_exec|exec|create_function)\s*\(\s*(base64_decode\s*\(\s*|gzinflate\s*\(\s*|str_rot13\s*\(\s*|stripslashes\s*\(\s*)*\$_(GET|POST|REQUEST|COOKIE|SERVER)\s*\[/ nocase
        $backtick = /`\s*\$_(GET|POST|REQUEST)\[/
        $preg = /preg_replace\s*\(\s*["'].{1,20}\/e["']\s*,\s*\$_(GET|POST|REQUEST)/
    condition:
        filesize < 2MB and $php and ($exec or $backtick or $preg)
}

rule Webshell_JSP
{
    meta:
        category = "malware"
        severity = "critical"
        description = "JSP web shell (request parameter run as a command)"
    strings:
        $rt = /Runtime\s*\.\s*getRuntime\s*\(\s*\)\s*\.\s*exec\s*\(/
        $pb = "new ProcessBuilder("
        $param = "request.getParameter("
    condition:
        filesize < 2MB and ($rt or $pb) and $param
}

rule Webshell_ASPX
{
    meta:
        category = "malware"
        severity = "critical"
        description = "ASP.NET web shell (request input run as a command)"
    strings:
        $page = /<%@\s*Page/ nocase
        $script = /<script[^>]{0,80}runat\s*=\s*"?server/ nocase
        $proc1 = "Process.Start(" nocase
        $proc2 = "ProcessStartInfo" nocase
        $cmd = "cmd.exe" nocase
        $req = /Request(\.Form|\.QueryString|\.Params)?\s*\[/ nocase
    condition:
        filesize < 2MB and ($page or $script) and any of ($proc*) and ($req or $cmd)
}
