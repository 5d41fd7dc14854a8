"""IIS 6 names: `x.asp;.jpg` and files under a folder named `x.asp/` run as ASP, so they get the ASP reader."""

from agent.imagegate import webshell
from agent.imagegate.webshell import language_of

SHELL = b'<%@ Language=VBScript %>\n<% Execute(Request("c")) %>\n'


def test_semicolon_names_are_read_as_asp():
    assert language_of("/var/www/up/shell.asp;.jpg", SHELL) == "asp"
    assert language_of("/srv/a/b.aspx;x.png", b"") == "aspx"
    assert language_of("/srv/a/c.cer;.gif", b"") == "asp"


def test_files_under_an_asp_folder_are_read_as_asp():
    assert language_of("/var/www/up/x.asp/photo.jpg", SHELL) == "asp"


def test_a_shell_behind_an_iis_name_is_found():
    hits = webshell.scan("/var/www/up/shell.asp;.jpg", SHELL)
    assert any(h.confidence >= webshell.THRESHOLD for h in hits)


def test_plain_pictures_and_semicolons_elsewhere_are_not_web_code():
    assert language_of("/var/www/up/photo.jpg", b"\xff\xd8\xff\xe0") is None
    assert language_of("/var/www/up/a;b.jpg", b"\xff\xd8") is None
    assert language_of("/var/www/static.asp.bak/readme.txt", b"hello") is None
