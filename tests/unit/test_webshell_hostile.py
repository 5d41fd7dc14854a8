"""Hostile input to the PHP reader: each case ends in bounded CPU time and memory, and nothing
escapes webshell.scan (it returns hits, possibly a low-confidence `budget` or `nesting` one)."""

from __future__ import annotations

import base64
import os
import random
import time
import tracemalloc
import zlib

import pytest

from agent.imagegate import webshell

CPU_LIMIT = 4.0  # seconds; the reader's own budget is 2 s of CPU per file
MEM_LIMIT = 256 * 1024 * 1024  # tracemalloc peak, bytes


def _bounded(data: bytes, name: str = "x.php"):
    tracemalloc.start()
    t0 = time.process_time()
    try:
        hits = webshell.scan(name, data)
    finally:
        cpu = time.process_time() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    # tracemalloc slows allocation-heavy code about twice: the CPU limit allows for it
    assert cpu < CPU_LIMIT * 2, f"{cpu:.2f} s of CPU"
    assert peak < MEM_LIMIT, f"peak {peak / 1e6:.0f} MB"
    assert isinstance(hits, list)
    return hits


def _deflate(b: bytes) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(b) + c.flush()


def test_ten_thousand_nested_parentheses():
    hits = _bounded(b"<?php $a = " + b"(" * 10_000 + b"1" + b")" * 10_000 + b"; system($_GET['c']);")
    assert any(h.rule == "php.nesting" for h in hits)


def test_thousand_deep_eval_base64_chain_in_the_text():
    code = b"<?php " + b"eval(base64_decode(" * 1000 + b"'c3lzdGVtKCRfR0VUWzFdKTs='" + b"))" * 1000 + b";"
    _bounded(code)


def test_decode_layers_past_the_limit():
    layer = b"system($_GET['c']);"
    for _ in range(20):
        layer = b"eval(base64_decode('" + base64.b64encode(layer) + b"'));"
    hits = _bounded(b"<?php " + layer)
    assert any(h.rule == "php.decode-depth" for h in hits)
    assert webshell.is_shell(hits)  # a 20-layer wrapper is itself the mark of a packed shell


def test_two_megabyte_single_string_literal():
    _bounded(b"<?php $x = '" + b"A" * (2 * 1024 * 1024 - 20) + b"'; echo $x;")


def test_two_megabytes_of_binary_junk_named_php():
    rnd = random.Random(7)
    junk = rnd.randbytes(2 * 1024 * 1024)
    _bounded(junk, "x.php")
    _bounded(b"<?php " + junk, "x.php")  # in PHP mode from the first byte


def test_gzinflate_bomb_is_capped():
    bomb = _deflate(b"\0" * (64 * 1024 * 1024))  # 64 MB of zeros in ~64 KB; past the decode allowance
    code = b"<?php eval(gzinflate(base64_decode('" + base64.b64encode(bomb) + b"')));"
    hits = _bounded(code)
    assert any(h.rule in ("php.decode-bomb", "budget") for h in hits), hits


def test_nested_bomb_chain():
    inner = b"<?php eval(gzinflate(base64_decode('" + base64.b64encode(_deflate(b" " * (8 << 20))) + b"')));"
    outer = b"<?php eval(gzinflate(base64_decode('" + base64.b64encode(_deflate(inner[6:])) + b"')));"
    _bounded(outer)


def test_str_repeat_bomb():
    hits = _bounded(b"<?php $a = str_repeat('x', 1000000000); eval($a);")
    assert not webshell.is_shell(hits)


def test_doubling_concatenation_loop():
    code = b"<?php $a = 'x';" + b" $a = $a . $a;" * 60 + b" eval($a);"
    _bounded(code)


@pytest.mark.parametrize("tail", [
    b"'unterminated single",
    b'"unterminated double $x {$y',
    b"/* unterminated comment",
    b"<<<EOT\nunterminated heredoc $x\n",
    b"<<<'EOT'\nunterminated nowdoc\n",
    b"`unterminated backtick",
    b"function f( { class { ",
    b"$a = [[[[[[",
])
def test_unterminated_constructs(tail):
    _bounded(b"<?php system($_GET['c']); " + tail)


def test_invalid_utf8():
    data = b"<?php $x = \"\xff\xfe\xc3\x28\xa0\xa1\xe2\x28\xa1\"; system($_GET['\xf0\x28\x8c\x28']); " + os.urandom(512)
    hits = _bounded(data)
    assert webshell.is_shell(hits)


def test_utf16_file():
    hits = _bounded("<?php system($_GET['c']); ?>".encode("utf-16"))
    assert webshell.is_shell(hits)


def test_many_functions_calling_each_other():
    funcs = b"".join(b"function f%d($x) { return f%d($x) . f%d($x); }\n" % (i, i + 1, i + 1) for i in range(200))
    _bounded(b"<?php " + funcs + b"function f200($x) { return $x; } system(f0($_GET['c']));")


def test_recursive_function():
    hits = _bounded(b"<?php function r($x) { return r(r($x)); } eval(r($_POST['x']));")
    assert webshell.is_shell(hits)


def test_huge_array_literal():
    _bounded(b"<?php $a = array(" + b"'x'," * 50_000 + b"); echo implode('', $a);")


def test_long_concatenation_chain():
    _bounded(b"<?php $a = " + b"'a' . " * 30_000 + b"'b'; eval($a);")


def test_thousands_of_unknown_strings_starting_with_one_large_constant():
    # each keeps the constant's start (a dropper's payload) by reference, never a copy
    big = b"'" + b"<?php " + b"A" * 200_000 + b"'"
    body = b" ".join(b"$a[] = $big . $u%d;" % i for i in range(4000))
    _bounded(b"<?php $big = " + big + b"; " + body + b" file_put_contents($f, $a[7]);")


def test_thousands_of_xor_pieces_joined():
    piece = b'("\\x01"^"`")'
    _bounded(b"<?php $f = " + b".".join([piece] * 20_000) + b"; $f($_POST['x']);")


def test_many_pages_printing_packed_text():
    inner = base64.b64encode(b"$x = 1; echo $x; " * 40)
    _bounded(b"<?php " + b"echo base64_decode('" + inner + b"'); " * 3000)


def test_a_loop_of_products_that_overflows_to_infinity():
    _bounded(b"<?php $x = 1.5; for ($i = 0; $i < 5000; $i++) { $x = $x * 1e10; } echo 'v' . $x; system($_GET['c']);")


def test_a_long_loop_with_a_known_condition_is_cut_at_the_bound():
    _bounded(b"<?php $s = ''; for ($i = 0; $i < 100000000; $i++) { $s .= 'ab'; } eval($s);")
