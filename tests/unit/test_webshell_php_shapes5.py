"""PHP web-shell shapes added in the sixth session (2026-12-04), from the tune split's misses: a register_globals
emulation loop (`foreach` over a constant list of names, each set from the request through a variable variable),
request bytes re-spelled through ord() (URL escapes, XOR, shifted letters rebuilt in a loop, then decoded and run),
and a request-named path symlinked into the site (the shared-hosting symlink bypass). Each sits next to a benign
look-alike that must stay clean. Every sample is written here; none is copied from a collection."""

from __future__ import annotations

import time

from tests.unit.php_shell_asserts import _clean, _hits, _shell


# -- register_globals emulated: a constant list of names, each set from the request ------------------------
def test_variable_variables_from_the_request_over_a_constant_list():
    h = _shell("<?php $names = 'act dir file cmd';\n"
               "foreach (explode(' ', $names) as $i => $n) {\n"
               "  if (isset($_POST[$n])) $$n = $_POST[$n]; elseif (isset($_GET[$n])) $$n = $_GET[$n]; }\n"
               "if ($act == 'run') { echo shell_exec($cmd); }", rule="php.request-to-exec", sink="shell_exec")
    assert "variable variables" in h.source, h
    # the old long arrays, names in an array literal, a function that reads its variable through `global`
    _shell("<?php foreach (array('p', 'd') as $k) { $$k = $HTTP_GET_VARS[$k]; }\n"
           "function go() { global $d; if (!isset($d)) $d = '.'; foreach (scandir($d) as $e) echo $e; }\n"
           "go(); if (!empty($p)) { @unlink($p); @rename($p, $p . '.old'); @rmdir($p); @chmod($p, 0755); }")


def test_variable_variables_look_alikes_stay_clean():
    # settings copied by name from a fixed configuration array, then used as a path
    _clean("<?php $cfg = array('root' => '/srv/app', 'tmp' => '/tmp');\n"
           "foreach (array('root', 'tmp') as $n) { $$n = $cfg[$n]; }\n"
           "foreach (scandir($root) as $e) echo htmlspecialchars($e);")
    # a form's fields read by name into variables, then escaped and printed (no sink)
    _clean("<?php foreach (array('name', 'email') as $f) { $$f = isset($_POST[$f]) ? trim($_POST[$f]) : ''; }\n"
           "echo '<p>' . htmlspecialchars($name) . ' &lt;' . htmlspecialchars($email) . '&gt;</p>';")


# -- request bytes re-spelled through ord() ---------------------------------------------------------------
def test_request_bytes_respelled_through_ord_then_run():
    _shell("<?php $a = $_POST['m']; $s = '';\n"
           "for ($i = 0; $i < strlen($a); $i++) $s .= '%' . dechex(ord($a[$i]));\n"
           "@eval(rawurldecode($s));", rule="php.request-to-code", sink="eval", source="$_POST")
    _shell("<?php $k = $_COOKIE['k']; $o = '';\n"
           "for ($i = 0; $i < strlen($k); $i++) { $o .= chr(ord($k[$i]) ^ 7); }\nassert($o);",
           rule="php.request-to-code", source="$_COOKIE")
    _shell("<?php $c = $_GET['x']; $r = '';\n"
           "foreach (str_split($c) as $ch) $r .= chr(ord($ch) - 1);\nsystem($r);",
           rule="php.request-to-exec", sink="system")


def test_ord_look_alikes_stay_clean():
    # a checksum of the request's text, printed
    _clean("<?php $q = $_GET['q']; $h = 0;\n"
           "for ($i = 0; $i < strlen($q); $i++) $h = ($h * 31 + ord($q[$i])) % 65521;\necho 'bucket ' . $h;")
    # a slug: letters kept, the rest turned into hex escapes, shown in a link
    _clean("<?php $t = $_POST['title']; $s = '';\n"
           "for ($i = 0; $i < strlen($t); $i++) { $c = $t[$i];\n"
           "  $s .= ctype_alnum($c) ? $c : '_' . dechex(ord($c)); }\n"
           "echo '<a href=\"/p/' . htmlspecialchars($s) . '\">' . htmlspecialchars($t) . '</a>';")
    # a fixed command run, the request's first letter only compared
    _clean("<?php if (ord($_GET['m'][0]) == 100) { echo shell_exec('date'); }")


# -- a request-named path symlinked into the site -----------------------------------------------------------
def test_request_path_symlinked_into_the_site():
    _shell("<?php $target = $_GET['f']; $link = getcwd() . '/view.txt'; @unlink($link);\n"
           "@symlink($target, $link); echo file_get_contents('view.txt');", rule="php.request-symlink",
           sink="symlink", source="$_GET")
    _shell("<?php if (!empty($_POST['p'])) { symlink(trim($_POST['p']), 'sym/' . md5($_POST['p'])); echo 'ok'; }",
           rule="php.request-symlink")


def test_symlink_look_alikes_stay_clean():
    # an installer linking its own storage directory into the public folder
    _clean("<?php $pub = __DIR__ . '/public/storage'; if (!file_exists($pub)) symlink(__DIR__ . '/storage', $pub);")
    # the request only picks a name under a fixed directory, the target is fixed
    _clean("<?php $n = basename($_GET['n']); symlink('/srv/app/theme/default', '/srv/app/theme/' . $n);")
    # a deployment class: the request path arrives through a long flow, behind a capability check
    _clean("<?php class Deploy { function link($from, $to) { return symlink($from, $to); } }\n"
           "if (current_user_can('manage_options')) { $d = new Deploy(); $d->link($_POST['from'], $_POST['to']); }")


def test_new_shapes_stay_bounded_on_a_long_loop():
    # a loop over 200,000 request bytes: the ord() taint adds no per-byte work the budget does not bound
    code = "<?php $a = $_POST['m']; $s = '';\nfor ($i = 0; $i < 200000; $i++) $s .= chr(ord($a[$i]) ^ 3);\neval($s);"
    t0 = time.process_time()
    hs = _hits(code)
    assert time.process_time() - t0 < 5.0
    assert any(h.rule == "php.request-to-code" for h in hs), hs
