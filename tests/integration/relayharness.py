"""
Harness for the relay integration tests: a real nginx per test module.

Owns: the nginx.conf template, the prefix layout (conf, logs, spool,
maildir), starting/stopping/reloading/killing nginx, a raw SMTP client that
checks every reply line ends in CRLF, and readers for the queue files and
the Maildirs.  It never touches anything outside the prefix it is given
(except the loopback ports it allocates in 22000-22999).

Waits are on conditions (wait_until) with bounded timeouts, never bare
sleeps; the only "sleep" is quiet(), which asserts that nothing arrives
during a short window.
"""

import base64
import email.utils
import grp
import os
import pwd
import re
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import time
import zlib
from pathlib import Path


NGINX = "/usr/sbin/nginx"
# SANITIZE=1 ./build.sh test: the module is built with ASan and UBSan,
# nginx is not, so their runtimes are preloaded into nginx
SANITIZE_PRELOAD = os.environ.get("RELAY_SANITIZE_PRELOAD", "")


def nginx_argv(*args):
    """The nginx command line, with the sanitizers' runtimes preloaded
    when the module was built with them (env execs: the same pid)."""
    pre = ["env", "LD_PRELOAD=" + SANITIZE_PRELOAD] if SANITIZE_PRELOAD \
        else []
    return pre + [NGINX] + list(args)
STREAM_SO = "/usr/lib/nginx/modules/ngx_stream_module.so"
RELAY_MODULE = os.environ.get(
    "RELAY_MODULE", str(Path(__file__).resolve().parents[2] / "build" / "objs"
                        / "ngx_stream_relay_module.so"))
HOST = "127.0.0.1"
HOSTNAME = "relay.test"
MAX_SIZE = 1048576                  # relay_max_message_size 1m
MAX_RCPT = 5
MAX_ERRORS = 5

PORT_FIRST, PORT_LAST = 22000, 22999
_used_ports = set()

QUEUED_RE = re.compile(r"queued as ([0-9A-Za-z]+)\s*$")
ENH_RE = re.compile(r"^([245]\.\d{1,3}\.\d{1,3})(?:\s|$)")

# users of the strict.test local domain (relay_local_domain ... users=)
STRICT_USERS = ["listed", "bob@strict.test", "carol"]
# AUTH accounts (relay_auth_file): user -> password
AUTH_USERS = {
    "alice@example.test": "alice-secret",
    "bob@example.test": "b0b pass w0rd",
}


def wait_until(pred, timeout=10.0, interval=0.05, what="condition"):
    """Polls pred() until it returns a true value; returns that value."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s"
                                 % (timeout, what))
        time.sleep(interval)


def _port_free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((HOST, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def alloc_ports(n):
    """n distinct free loopback ports from 22000-22999, never reused."""
    out = []
    for port in range(PORT_FIRST, PORT_LAST + 1):
        if port in _used_ports:
            continue
        if _port_free(port):
            _used_ports.add(port)
            out.append(port)
            if len(out) == n:
                return out
    raise RuntimeError("no free ports left in %d-%d" % (PORT_FIRST, PORT_LAST))


# --------------------------------------------------------------------------
# prefix and configuration


def make_certs(d):
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec",
         "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
         "-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem"),
         "-days", "2", "-subj", "/CN=" + HOSTNAME],
        check=True, capture_output=True, timeout=30)
    return d


def crypt_hash(password):
    r = subprocess.run(["openssl", "passwd", "-6", "-stdin"],
                       input=password.encode() + b"\n",
                       check=True, capture_output=True, timeout=30)
    return r.stdout.decode().strip()


def _worker_ids():
    uid = pwd.getpwnam("nobody").pw_uid
    try:
        gid = grp.getgrnam("nogroup").gr_gid
    except KeyError:
        gid = grp.getgrnam("nobody").gr_gid
    return uid, gid


def make_prefix(path, certs):
    """Lays out PREFIX/{conf,logs,spool,maildir}; workers run as nobody."""
    p = Path(path)
    for d in ("conf", "logs", "spool", "maildir"):
        (p / d).mkdir(parents=True, exist_ok=True)

    # workers (nobody) must be able to reach the prefix: pytest's base
    # temp dirs are 0700, so add search permission on the way down.
    for anc in [p] + list(p.parents):
        if str(anc) in ("/", "/tmp"):
            break
        os.chmod(anc, os.stat(anc).st_mode | 0o011)

    uid, gid = _worker_ids()
    for d in ("spool", "maildir"):
        os.chown(p / d, uid, gid)
        os.chmod(p / d, 0o777)
    os.chmod(p / "conf", 0o755)

    shutil.copy(Path(certs) / "cert.pem", p / "conf" / "cert.pem")
    shutil.copy(Path(certs) / "key.pem", p / "conf" / "key.pem")
    os.chmod(p / "conf" / "key.pem", 0o644)

    users = ["listed", "bob@strict.test",
             "carol:" + crypt_hash("carol-pw")]
    (p / "conf" / "users").write_text("\n".join(users) + "\n")
    (p / "conf" / "passwd").write_text(
        "".join("%s:%s\n" % (u, crypt_hash(pw))
                for u, pw in AUTH_USERS.items()))
    for f in ("users", "passwd"):
        os.chmod(p / "conf" / f, 0o644)
    return p


CONF_TEMPLATE = """\
load_module @@STREAM_SO@@;
load_module @@RELAY_MODULE@@;
worker_processes @@WORKERS@@;
error_log logs/error.log info;
pid logs/nginx.pid;
thread_pool relay threads=16;
events { worker_connections 10240; }
stream {
    relay_spool spool;
@@JOURNAL_SIZE@@
    relay_thread_pool relay;
    relay_maildir maildir;
    relay_hostname relay.test;
    relay_local_domain example.test;
    relay_local_domain strict.test users=conf/users;
@@STREAM_EXTRA@@
    log_format smtp '$remote_addr helo=$relay_helo from=$relay_sender '
                    'nrcpt=$relay_rcpt_count id=$relay_queue_id '
                    'tls=$relay_tls user=$relay_auth_user '
                    'reply="$relay_last_reply"';

    # main: trusted network, plain SMTP
    server {
        listen 127.0.0.1:@@PORT_MAIN@@;
        relay_smtp;
        relay_trusted_networks 127.0.0.0/8;
        relay_max_message_size 1m;
        relay_max_recipients 5;
        relay_max_errors 5;
        relay_timeout 5s;
        access_log logs/smtp.log smtp;
    }

    # submission: STARTTLS, AUTH after TLS, no trusted network
    server {
        listen 127.0.0.1:@@PORT_SUB@@;
        relay_smtp;
        relay_starttls on;
        ssl_certificate conf/cert.pem;
        ssl_certificate_key conf/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        relay_auth_file conf/passwd;
        relay_max_message_size 1m;
        relay_timeout 5s;
        access_log logs/smtp.log smtp;
    }

    # untrusted: plain SMTP without relay_trusted_networks (an MX)
    server {
        listen 127.0.0.1:@@PORT_UNTRUSTED@@;
        relay_smtp;
        relay_max_message_size 1m;
        relay_max_errors 5;
        relay_timeout 5s;
        access_log logs/smtp.log smtp;
    }

    # idle: like main with a short idle timeout
    server {
        listen 127.0.0.1:@@PORT_IDLE@@;
        relay_smtp;
        relay_trusted_networks 127.0.0.0/8;
        relay_max_message_size 1m;
        relay_timeout 1s;
        access_log logs/smtp.log smtp;
    }

    # lax: like main, with STARTTLS and AUTH, pipelining discipline off
    server {
        listen 127.0.0.1:@@PORT_LAX@@;
        relay_smtp;
        relay_trusted_networks 127.0.0.0/8;
        relay_strict_pipelining off;
        relay_starttls on;
        ssl_certificate conf/cert.pem;
        ssl_certificate_key conf/key.pem;
        relay_auth_file conf/passwd;
        relay_max_message_size 1m;
        relay_max_recipients 5;
        relay_max_errors 5;
        relay_timeout 5s;
        access_log logs/smtp.log smtp;
    }
}
@@HTTP@@"""

PORT_NAMES = ("main", "sub", "untrusted", "idle", "lax")


def render_conf(ports, workers=2, stream_extra="", http_extra=""):
    """http_extra: the inside of an http{} block (none when empty), e.g.
    a server with "location = /metrics { relay_metrics; }"."""
    conf = CONF_TEMPLATE
    subst = {
        "STREAM_SO": STREAM_SO,
        "RELAY_MODULE": RELAY_MODULE,
        "WORKERS": str(workers),
        "STREAM_EXTRA": stream_extra,
        # written whole at each start (128m by default): kept small here,
        # unless the test sets its own
        "JOURNAL_SIZE": ("" if "relay_spool_journal_size" in stream_extra
                         else "    relay_spool_journal_size 16m;"),
        "PORT_MAIN": str(ports["main"]),
        "PORT_SUB": str(ports["sub"]),
        "PORT_UNTRUSTED": str(ports["untrusted"]),
        "PORT_IDLE": str(ports["idle"]),
        "PORT_LAX": str(ports["lax"]),
        "HTTP": ("http {\n    access_log off;\n%s\n}\n" % http_extra
                 if http_extra else ""),
    }
    for k, v in subst.items():
        conf = conf.replace("@@%s@@" % k, v)
    assert "@@" not in conf
    if SANITIZE_PRELOAD:
        # a binary upgrade (USR2) execs nginx with only the "env" variables
        conf = ("env LD_PRELOAD;\nenv ASAN_OPTIONS;\nenv UBSAN_OPTIONS;\n"
                + conf)
    return conf


# --------------------------------------------------------------------------
# nginx


def _ppid(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            data = f.read()
    except OSError:
        return None
    # comm may hold spaces: fields after the last ')'
    return int(data.rsplit(")", 1)[1].split()[1])


def _alive(pid):
    """Any thread of pid still running.  A killed process whose main thread
    is a zombie still holds its sockets while another thread finishes a
    sync it cannot leave (state D): it is not gone until every thread is."""
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return False
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            return True
    return False


def children_of(pid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit() and _ppid(int(d)) == pid and _alive(int(d)):
            out.append(int(d))
    return sorted(out)


class Nginx:
    """One nginx (master + workers) on its own prefix."""

    def __init__(self, prefix, ports, workers=2, stream_extra="",
                 http_extra=""):
        self.prefix = Path(prefix)
        self.ports = dict(ports)
        self.workers = workers
        self.stream_extra = stream_extra
        self.http_extra = http_extra
        self.proc = None
        self.allowed_alerts = []        # regexes of expected [alert] lines
        self.write_conf()

    # paths
    @property
    def spool(self):
        return self.prefix / "spool"

    @property
    def queue_dir(self):
        return self.prefix / "spool" / "queue"

    @property
    def incoming_dir(self):
        return self.prefix / "spool" / "incoming"

    @property
    def maildir(self):
        return self.prefix / "maildir"

    def port(self, name):
        return self.ports[name]

    def write_conf(self, workers=None, stream_extra=None, http_extra=None):
        if workers is not None:
            self.workers = workers
        if stream_extra is not None:
            self.stream_extra = stream_extra
        if http_extra is not None:
            self.http_extra = http_extra
        (self.prefix / "nginx.conf").write_text(
            render_conf(self.ports, self.workers, self.stream_extra,
                        self.http_extra))

    def _cmd(self, *args):
        return nginx_argv("-p", str(self.prefix) + "/", "-c", "nginx.conf",
                          *args)

    def start(self, timeout=15):
        stderr = open(self.prefix / "logs" / "stderr.log", "ab")
        self.proc = subprocess.Popen(
            self._cmd("-g", "daemon off;"),
            stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr,
            start_new_session=True)
        stderr.close()
        deadline = time.monotonic() + timeout
        for name in self.ports:
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError(
                        "nginx exited with %s at start:\n%s"
                        % (self.proc.returncode, self.logs_text()[-4000:]))
                try:
                    c = SMTPConn(self.ports[name], timeout=2)
                    c.close()
                    break
                except (OSError, AssertionError, EOFError):
                    if time.monotonic() > deadline:
                        raise AssertionError(
                            "nginx did not greet on %s port %d in %ds:\n%s"
                            % (name, self.ports[name], timeout,
                               self.logs_text()[-4000:]))
                    time.sleep(0.05)
        return self

    @property
    def master_pid(self):
        return self.proc.pid

    def worker_pids(self):
        return children_of(self.proc.pid)

    def reload(self, signal_only=False):
        """nginx -s reload (which parses the configuration first), or a
        bare SIGHUP to the master."""
        if signal_only:
            os.kill(self.proc.pid, signal.SIGHUP)
            return
        r = subprocess.run(self._cmd("-s", "reload"), capture_output=True,
                           timeout=30)
        assert r.returncode == 0, "nginx -s reload: %r" % (r.stderr,)

    def stop(self, timeout=10):
        """-s quit, then SIGKILL of the master and its workers."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = None
            return True
        graceful = True
        workers = self.worker_pids()
        try:
            self.proc.send_signal(signal.SIGQUIT)
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            graceful = False
            self.kill9(workers)
        wait_until(lambda: not any(_alive(p) for p in workers), 10,
                   what="nginx workers to exit")
        self.proc = None
        return graceful

    def kill9(self, workers=None):
        """SIGKILL the master first (so no one logs the workers' deaths),
        then every worker; waits until all are gone."""
        if workers is None:
            workers = self.worker_pids()
        pids = [self.proc.pid] + list(workers)
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)
        # workers reparented elsewhere: wait for them by /proc
        wait_until(lambda: not any(_alive(p) for p in workers), 10,
                   what="killed workers to disappear")
        self.proc = None

    def error_log(self):
        f = self.prefix / "logs" / "error.log"
        return f.read_text(errors="replace") if f.exists() else ""

    def logs_text(self):
        s = self.prefix / "logs" / "stderr.log"
        return (s.read_text(errors="replace") if s.exists() else "") \
            + self.error_log()

    def assert_log_clean(self):
        bad = [l for l in self.logs_text().splitlines()
               if ("[alert]" in l or "[emerg]" in l)
               and not any(re.search(a, l) for a in self.allowed_alerts)]
        assert not bad, "error.log has [alert]/[emerg]:\n" + "\n".join(bad[:20])
        # a sanitized worker's UBSan report can land on its stderr, which
        # nginx sends to error.log, instead of the UBSAN_OPTIONS log path
        if SANITIZE_PRELOAD:
            ub = [l for l in self.logs_text().splitlines()
                  if "runtime error:" in l]
            assert not ub, "sanitizer report:\n" + "\n".join(ub[:20])

    def log_mark(self):
        f = self.prefix / "logs" / "error.log"
        return f.stat().st_size if f.exists() else 0

    def assert_no_crash(self, since=0):
        """No worker died of a signal other than our SIGKILL (since the
        error.log offset `since`, from log_mark())."""
        with open(self.prefix / "logs" / "error.log", "rb") as f:
            f.seek(since)
            text = f.read().decode("utf-8", "replace")
        bad = [l for l in text.splitlines()
               if re.search(r"exited on signal (?!9\b)", l)]
        assert not bad, "worker crashed:\n" + "\n".join(bad[:10])

    def smtp_log(self):
        f = self.prefix / "logs" / "smtp.log"
        return f.read_text(errors="replace") if f.exists() else ""


class PortRange:
    """TCP ports of [first, last] for a test module: alloc(ips) gives one
    free on every address of ips, never the same twice in this process;
    start: where the search begins (spread concurrent runs)."""

    def __init__(self, first, last, start=None):
        self.first, self.last = first, last
        self.start = first if start is None else start
        self.used = set()

    def alloc(self, ips=("127.0.0.1",)):
        span = list(range(self.first, self.last + 1))
        off = span.index(self.start) if self.start in span else 0
        for port in span[off:] + span[:off]:
            if port in self.used:
                continue
            ok = True
            for ip in ips:
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((ip, port))
                except OSError:
                    ok = False
                finally:
                    s.close()
                if not ok:
                    break
            if ok:
                self.used.add(port)
                return port
        raise RuntimeError("no free port in %d-%d" % (self.first, self.last))


def kill_orphans(prefix):
    """SIGKILL the nginx processes that hold files of this prefix open: the
    workers a crashed master left behind, or a master whose parent is gone
    (a binary upgrade's); ours only: nothing else opens our prefix."""
    prefix = str(prefix)
    killed = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            fds = os.listdir("/proc/%s/fd" % d)
            mine = any(os.readlink("/proc/%s/fd/%s" % (d, f))
                       .startswith(prefix + "/") for f in fds)
            if mine and "nginx" in open("/proc/%s/cmdline" % d).read():
                os.kill(int(d), signal.SIGKILL)
                killed.append(int(d))
        except OSError:
            continue
    return killed


def stop_node(ng):
    """nginx -s quit (SIGQUIT) of ng's master, or of the one its pid file
    names when it runs as a daemon; the master's exit code (None for a
    daemon), and no process of it left behind."""
    rc = None
    if ng.proc is not None:
        if ng.proc.poll() is None:
            ng.proc.send_signal(signal.SIGQUIT)
            try:
                ng.proc.wait(15)
            except subprocess.TimeoutExpired:
                ng.proc.kill()
                ng.proc.wait(5)
        rc = ng.proc.returncode
        ng.proc = None
    else:
        try:
            pid = int((ng.prefix / "logs" / "nginx.pid").read_text().strip())
            os.kill(pid, signal.SIGQUIT)
            wait_until(lambda: not _alive(pid), 15,
                       what="nginx master %d to exit" % pid)
        except (OSError, ValueError, AssertionError):
            pass
    wait_until(lambda: not kill_orphans(ng.prefix), 10,
               what="no process of %s left" % ng.prefix)
    return rc


def require_module():
    if not os.path.exists(RELAY_MODULE):
        import pytest
        pytest.skip("relay module not built: %s" % RELAY_MODULE)


def launch(tmp_path_factory, certs, name, workers=2, stream_extra="",
           http_extra=""):
    require_module()
    prefix = make_prefix(tmp_path_factory.mktemp(name), certs)
    return launch_at(prefix, workers, stream_extra, http_extra)


def launch_at(prefix, workers=2, stream_extra="", http_extra=""):
    ports = dict(zip(PORT_NAMES, alloc_ports(len(PORT_NAMES))))
    ng = Nginx(prefix, ports, workers=workers, stream_extra=stream_extra,
               http_extra=http_extra)
    ng.start()
    return ng


# --------------------------------------------------------------------------
# raw SMTP client


class Reply:
    def __init__(self, lines):
        self.lines = lines
        self.code = int(lines[-1][:3])
        first = lines[0][4:]
        m = ENH_RE.match(first)
        self.enh = m.group(1) if m else None
        self.text = "\n".join(l[4:] for l in lines)

    def is_(self, code, enh=None):
        return self.code == code and (enh is None or self.enh == enh)

    @property
    def queue_id(self):
        m = QUEUED_RE.search(self.lines[-1])
        return m.group(1) if m else None

    def __repr__(self):
        return "Reply(%r)" % (self.lines,)


class SMTPConn:
    """A line-oriented SMTP client over a socket (plain or TLS)."""

    def __init__(self, port, timeout=10, greet=True, source=None):
        self.port = port
        self.timeout = timeout
        self.sock = socket.create_connection(
            (HOST, port), timeout=timeout,
            source_address=(source, 0) if source else None)
        self.buf = b""
        self.tls = False
        self.greeting = self.reply() if greet else None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def _recv(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout()
        self.sock.settimeout(left)
        try:
            return self.sock.recv(65536)
        except ConnectionResetError:
            return b""

    def read_line(self, timeout=None):
        deadline = time.monotonic() + (timeout or self.timeout)
        while b"\n" not in self.buf:
            try:
                d = self._recv(deadline)
            except socket.timeout:
                raise AssertionError("no reply line within %ss (buffered %r)"
                                     % (timeout or self.timeout, self.buf))
            if not d:
                raise EOFError("connection closed (buffered %r)" % self.buf)
            self.buf += d
        line, self.buf = self.buf.split(b"\n", 1)
        assert line.endswith(b"\r"), "reply line not CRLF-terminated: %r" % line
        return line[:-1].decode("utf-8", "replace")

    def reply(self, timeout=None):
        lines = []
        while True:
            l = self.read_line(timeout)
            assert re.match(r"^[2-5]\d\d([ -]|$)", l), "bad reply line %r" % l
            if lines:
                assert l[:3] == lines[0][:3], "mixed codes %r %r" % (lines, l)
            lines.append(l)
            if len(l) == 3 or l[3] == " ":
                return Reply(lines)

    def replies(self, n, timeout=None):
        return [self.reply(timeout) for _ in range(n)]

    def cmd(self, line, timeout=None):
        self.send(line + "\r\n" if isinstance(line, str) else line + b"\r\n")
        return self.reply(timeout)

    def expect(self, line, code, enh=None, timeout=None):
        r = self.cmd(line, timeout)
        assert r.is_(code, enh), "sent %r, expected %s %s, got %r" \
            % (line, code, enh or "", r)
        return r

    def ehlo(self, name="client.test"):
        r = self.cmd("EHLO " + name)
        assert r.code == 250, "EHLO -> %r" % r
        return r, ehlo_extensions(r)

    def starttls(self):
        self.expect("STARTTLS", 220, "2.0.0")
        assert self.buf == b"", \
            "plaintext after the 220 to STARTTLS: %r" % self.buf
        self.wrap_tls()

    def wrap_tls(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.sock.settimeout(self.timeout)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=HOSTNAME)
        self.tls = True

    def quiet(self, wait=0.5):
        """Returns whatever arrives within `wait` seconds (b"" expected)."""
        deadline = time.monotonic() + wait
        got = self.buf
        self.buf = b""
        while time.monotonic() < deadline:
            if not self.tls or not self.sock.pending():
                r, _, _ = select.select([self.sock], [], [],
                                        max(0, deadline - time.monotonic()))
                if not r:
                    break
            try:
                d = self._recv(deadline)
            except (socket.timeout, ssl.SSLWantReadError):
                break
            if not d:
                break
            got += d
        return got

    def wait_closed(self, timeout=None):
        """True when the server closes the connection within timeout."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            try:
                d = self._recv(deadline)
            except socket.timeout:
                return False
            except (ssl.SSLError, OSError):
                return True
            if not d:
                return True
            self.buf += d

    def send_data(self, body):
        """DATA body (bytes ending in CRLF) with dot-stuffing; returns the
        final reply."""
        self.send(dot_stuff(body) + b".\r\n")
        return self.reply()

    def message(self, sender, rcpts, body, ehlo=None, mail_params=""):
        """A whole transaction; returns the queue id (asserting 250s)."""
        if ehlo:
            self.ehlo(ehlo)
        self.expect("MAIL FROM:<%s>%s" % (sender, mail_params), 250, "2.1.0")
        for r in rcpts:
            self.expect("RCPT TO:<%s>" % r, 250, "2.1.5")
        self.expect("DATA", 354)
        r = self.send_data(body)
        assert r.is_(250, "2.0.0") and r.queue_id, "end of data -> %r" % r
        return r.queue_id


def ehlo_extensions(r):
    ext = {}
    for l in r.lines[1:]:
        words = l[4:].split()
        if words:
            ext[words[0].upper()] = words[1:]
    return ext


def dot_stuff(body):
    assert body == b"" or body.endswith(b"\r\n"), "body must end in CRLF"
    lines = body.split(b"\r\n")
    return b"\r\n".join(b"." + l if l.startswith(b".") else l for l in lines)


def b64(s):
    if isinstance(s, str):
        s = s.encode()
    return base64.b64encode(s).decode()


def auth_plain_token(user, pw):
    return b64(b"\0" + user.encode() + b"\0" + pw.encode())


def simple_body(marker, subject="test"):
    return ("From: <sender@example.org>\r\nTo: <rcpt@example.test>\r\n"
            "Subject: %s\r\nMessage-ID: <%s@client.test>\r\n\r\n"
            "body %s\r\n" % (subject, marker, marker)).encode()


def unique(tag="m"):
    unique.n += 1
    return "%s%d%d" % (tag, os.getpid(), unique.n)


unique.n = 0


# --------------------------------------------------------------------------
# spool and maildir readers


def all_files(d):
    d = Path(d)
    if not d.exists():
        return []
    out = []
    for root, _, files in os.walk(d):
        for f in files:
            out.append(Path(root) / f)
    return sorted(out)


TRAILER_RE = re.compile(rb"\nRELAY-END (\d{20})\n\Z")


def split_trailer(data):
    """(data without the trailer, True) when the queue file ends with its
    32-octet trailer "\nRELAY-END <20-digit offset of the trailer>\n"."""
    m = TRAILER_RE.search(data[-32:])
    if m and len(data) >= 32 and int(m.group(1)) == len(data) - 32:
        return data[:-32], True
    return data, False


def queue_file_complete(ng, path):
    """A queued message: the file has its trailer (or, in a layout with
    spool/incoming/, any file in queue/ is complete)."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return False
    if not data.startswith(b"RELAY-QUEUE "):
        return False
    return split_trailer(data)[1] or ng.incoming_dir.is_dir()


def raw_queue_files(ng):
    return all_files(ng.queue_dir)


def queue_files(ng):
    """Files of messages that are queued (complete)."""
    return [p for p in raw_queue_files(ng) if queue_file_complete(ng, p)]


JOURNAL_HEADER_LEN = 64
JOURNAL_RECORDS_AT = 512
JOURNAL_RECORD_MAGIC = 0x31434552
JOURNAL_PAD_MAGIC = 0x31444150


def journal_header(data, offset):
    """(nonce, segment size, boot id) of a journal segment header (the
    format documented in module/ngx_relay_journal.c)."""
    h_ = data[offset:offset + JOURNAL_HEADER_LEN]
    assert h_[:8] == b"RLYJNL01", h_[:8]
    nonce, seg_size = struct.unpack_from("<QQ", h_, 8)
    boot = h_[24:60]
    (crc,) = struct.unpack_from("<I", h_, 60)
    assert crc == zlib.crc32(h_[:60]), "segment header CRC"
    return nonce, seg_size, boot


def journal_records(path):
    """[(id, offset of the record, data)] of a journal's valid records, in
    order (pads are stepped over)."""
    data = Path(path).read_bytes()
    _, seg_size, _ = journal_header(data, 0)
    out = []
    for seg in range(2):
        base = seg * seg_size
        nonce, _, _ = journal_header(data, base)
        off = base + JOURNAL_RECORDS_AT
        while off + 32 <= base + seg_size:
            magic, crc, rnonce, length, idlen = struct.unpack_from(
                "<IIQIH", data, off)
            if magic not in (JOURNAL_RECORD_MAGIC, JOURNAL_PAD_MAGIC) \
                    or rnonce != nonce:
                break
            hdr = bytearray(data[off:off + 32])
            hdr[4:8] = b"\0\0\0\0"
            body = data[off + 32:off + 32 + idlen + length]
            if magic == JOURNAL_PAD_MAGIC:
                if zlib.crc32(bytes(hdr)) != crc:
                    break
            elif zlib.crc32(bytes(hdr) + body) != crc:
                break
            else:
                out.append((body[:idlen].decode(), off, body[idlen:]))
            off += -(-(32 + idlen + length) // 8) * 8
    return out


def journal_files(ng):
    """The workers' journals (not "<pid>.new", one still being made)."""
    d = ng.spool / "journal"
    return sorted(p for p in d.iterdir() if p.name.isdigit()) \
        if d.is_dir() else []


def journaled(ng):
    """{queue id: the queue file's octets} of every valid journal record."""
    out = {}
    for j in journal_files(ng):
        for qid, _, data in journal_records(j):
            out[qid] = data
    return out


def wait_complete(ng, ids, timeout=10):
    """Waits until each of these queue files has its content (a new
    message's file stays hollow until its first attempt ends, the record
    in the journal holding it) or is gone."""
    def done():
        return all(not (ng.queue_dir / q).exists()
                   or queue_file_complete(ng, ng.queue_dir / q) for q in ids)
    wait_until(done, timeout, what="queue files written: %s" % [
        q for q in ids if (ng.queue_dir / q).exists()
        and not queue_file_complete(ng, ng.queue_dir / q)][:5])


def incomplete_queue_files(ng):
    return [p for p in raw_queue_files(ng)
            if not queue_file_complete(ng, p)]


def incoming_files(ng):
    return all_files(ng.incoming_dir)


def parse_queue_file(path):
    """(first line, [(key, value)], [rcpt dicts], message bytes); the
    trailer, if any, is not part of the message."""
    data = split_trailer(Path(path).read_bytes())[0]
    i = data.find(b"\n\n")
    j = data.find(b"\r\n\r\n")
    if j != -1 and (i == -1 or j < i):
        head, msg = data[:j], data[j + 4:]
    elif i != -1:
        head, msg = data[:i], data[i + 2:]
    else:
        head, msg = data, b""
    lines = head.decode("utf-8", "replace").replace("\r\n", "\n").split("\n")
    first, kv, rcpts = lines[0], [], []
    for l in lines[1:]:
        key, _, value = l.partition(" ")
        kv.append((key, value))
        if key == "rcpt":
            f = value.split(" ", 3)
            if len(f) == 4:
                rcpts.append({"state": f[0], "notify": f[1],
                              "orcpt": f[2], "address": f[3]})
            else:
                rcpts.append({"raw": value})
    return first, kv, rcpts, msg


def queue_index(ng):
    """queue id -> [paths]: by file name and by an "id" header line."""
    idx = {}
    for p in queue_files(ng):
        keys = {p.name, p.name.split(".")[0]}
        try:
            first, kv, _, _ = parse_queue_file(p)
            keys.update(v for k, v in kv if k in ("id", "queue_id"))
        except OSError:
            continue
        for k in keys:
            idx.setdefault(k, [])
            if p not in idx[k]:
                idx[k].append(p)
    return idx


def queue_file_for(ng, qid):
    paths = queue_index(ng).get(qid, [])
    return paths[0] if len(paths) == 1 else None


def mailbox_files(ng, domain, user, sub="new"):
    return all_files(ng.maildir / domain / user / sub)


def wait_delivered(ng, domain, user, count=1, timeout=10):
    return wait_until(
        lambda: (len(mailbox_files(ng, domain, user)) >= count
                 and mailbox_files(ng, domain, user)),
        timeout, what="%d message(s) in maildir %s/%s/new"
        % (count, domain, user))


def files_containing(root, marker):
    """Files under root holding marker.  The workers' journals
    (spool/journal/) are skipped: they keep copies of accepted messages
    until their blocks are reused, and are no message store."""
    if isinstance(marker, str):
        marker = marker.encode()
    out = []
    for p in all_files(root):
        if p.parent.name == "journal" and p.parent.parent.name == "spool":
            continue
        try:
            if marker in p.read_bytes():
                out.append(p)
        except OSError:
            pass
    return out


def assert_not_stored(ng, marker, timeout=3):
    # (raw spool: incoming/ and partial queue files count too)
    """Neither the spool nor any Maildir holds a file with marker."""
    wait_until(lambda: not files_containing(ng.spool, marker), timeout,
               what="no spool file to contain %r" % marker)
    assert not files_containing(ng.maildir, marker), \
        "refused message %r was delivered" % marker


def barrier(ng, port_name="main"):
    """Queues a message to a fresh local user and waits until delivered:
    everything queued before it has had its chance to be delivered."""
    user = unique("barrier")
    with SMTPConn(ng.port(port_name)) as c:
        c.message("b@example.org", ["%s@example.test" % user],
                  simple_body(user), ehlo="barrier.test")
        c.cmd("QUIT")
    wait_delivered(ng, "example.test", user)


def split_delivered(data):
    """Maildir file -> (return_path, delivered_to, received, rest)."""
    m = re.match(rb"Return-Path: <([^>\r\n]*)>\r\nDelivered-To: ([^\r\n]*)\r\n",
                 data)
    assert m, "no Return-Path/Delivered-To prologue: %r" % data[:200]
    pos = m.end()
    assert data[pos:].startswith(b"Received: "), \
        "no Received: after Delivered-To: %r" % data[pos:pos + 200]
    end = pos
    while True:
        nl = data.find(b"\r\n", end)
        assert nl != -1, "unterminated Received: header"
        end = nl + 2
        if data[end:end + 1] not in (b" ", b"\t"):
            break
    return (m.group(1).decode(), m.group(2).decode(), data[pos:end],
            data[end:])


RECEIVED_RE = re.compile(
    r"^Received: from (?P<helo>\S+) \((?P<host>\S+) \[127\.0\.0\.1\]\)"
    r"\r\n\tby relay\.test (?:\([^()]*\)\s+)?(?P<by>with .*)$", re.S)


def check_received(hdr, helo, proto, qid):
    """Checks a Received: header as the relay prepends it."""
    s = hdr.decode("utf-8", "replace")
    m = RECEIVED_RE.match(s)
    assert m, "Received: header shape: %r" % s
    assert m.group("helo") == helo, "helo in %r" % s
    unfolded = re.sub(r"\r\n[ \t]+", " ", m.group("by")).strip()
    m2 = re.match(r"with (\S+)", unfolded)
    assert m2 and m2.group(1) == proto, \
        "expected 'with %s' in %r" % (proto, s)
    assert re.search(r"\bid %s\b" % re.escape(qid), unfolded), \
        "queue id %s not in %r" % (qid, s)
    date = unfolded.rsplit(";", 1)
    assert len(date) == 2 and email.utils.parsedate_tz(date[1].strip()), \
        "no '; <date>' at the end of %r" % s
    return unfolded


def _tcp_inode(local_port, remote_port):
    """Inode of the server-side socket 127.0.0.1:local_port <-> remote."""
    want_l = "0100007F:%04X" % local_port
    want_r = "0100007F:%04X" % remote_port
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            w = line.split()
            if w[1] == want_l and w[2] == want_r:
                return w[9]
    return None


def worker_of(ng, conn):
    """pid of the nginx worker holding the session of conn."""
    inode = _tcp_inode(conn.port, conn.sock.getsockname()[1])
    assert inode, "no server socket for %r" % (conn.sock.getsockname(),)
    target = "socket:[%s]" % inode
    for pid in ng.worker_pids():
        d = "/proc/%d/fd" % pid
        try:
            for fd in os.listdir(d):
                try:
                    if os.readlink(os.path.join(d, fd)) == target:
                        return pid
                except OSError:
                    pass
        except OSError:
            pass
    return None
