"""PHP web-shell shapes added after HzieeC/WebshellDetectDataset joined the corpus (2026-12-03, fourth
session, second round): one decoded request list that both names the function and gives its argument
(`$x = explode('~', base64_decode(...)); $x[0]($x[1])`), and a dropper whose double-quoted payload puts
the request's value inside a PHP sink call of the file it writes. Each sits next to a benign look-alike that must
stay clean. Every sample is written here; none is copied from a collection."""

from __future__ import annotations

from tests.unit.php_shell_asserts import _clean, _shell


# -- one request list: its first element is the function, another its argument -----------------------
def test_request_list_element_called_with_another_element():
    _shell("<?php $p = explode('|', base64_decode($_POST['d'])); @$p[0]($p[1]);", rule="php.request-function")
    _shell("<?php $h = getallheaders(); $q = explode('~', base64_decode(substr($h['X-T'], 1)));\n"
           "$q[0]($q[1]);", rule="php.request-function")
    _shell("<?php $a = str_getcsv($_COOKIE['z']); $a[1]($a[0]);", rule="php.request-function")


def test_request_list_look_alikes_stay_clean():
    # request elements printed, not called
    _clean("<?php $p = explode(',', $_GET['tags']); echo htmlspecialchars($p[0]) . ' ' . htmlspecialchars($p[1]);")
    # a constant table whose element is called with another element: nothing from the request
    _clean("<?php $cb = ['strtoupper', 'abc']; echo $cb[0]($cb[1]);")
    # a request list element called with a constant argument stays below the threshold as before
    _clean("<?php $p = explode(',', $_GET['f']); if ($p[0] === 'x') { echo $p[0]; }")


# -- a dropper: the request's value interpolated inside a PHP sink call of the file written ----------
def test_interpolated_request_inside_written_sink_call():
    h = _shell('<?php fputs(fopen(c.php, w), "<? eval($_POST[c]); ?>"); ?>', rule="php.request-file-write")
    assert "as code" in h.detail
    _shell('<?php $f = fopen("cache/" . md5(1) . ".txt", "w"); fwrite($f, "<?php @system(" . $_GET["q"] . ");");',
           rule="php.request-file-write")


def test_written_script_look_alikes_stay_clean():
    # a compiled template: the request's value written inside an echo, not a sink call
    _clean('<?php file_put_contents("cache/page.txt", "<?php echo \\"" . addslashes($_GET["t"]) . "\\"; ?>");')
    # a log line that names eval( as text, written without a PHP open tag
    _clean('<?php file_put_contents("app.log", "eval(" . $_GET["q"] . ") refused\\n", FILE_APPEND);')
