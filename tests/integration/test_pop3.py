"""
POP3 over the local Maildirs (relay_pop3): real nginx, real clients
(Python's poplib, curl's pop3://, raw sockets).

Mail is put in through the SMTP server of the same nginx, then read back
over POP3 and compared byte for byte with the Maildir file (which is the
message as SMTP accepted it, with the delivery's Return-Path: and
Delivered-To: on top).  Covers: CAPA before and after STLS, plaintext
refused without TLS, USER/PASS and AUTH PLAIN good and bad, implicit TLS,
STAT/LIST/UIDL/TOP/RETR byte-exact, dot-stuffing, LF-only files, a large
message, new/ -> cur/, DELE+QUIT removes, DELE+RSET keeps, a dropped
connection keeps everything, [IN-USE] for a second session, pipelining,
garbage input, too many errors, idle timeout, the session log line.

Ports: 127.0.0.1:24000-24499.
"""

import os
import poplib
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

import relayharness as h


PORT_FIRST, PORT_LAST = 24000, 24499
_used = set()

NUSERS = 24
DOMAIN = "example.test"
PASSWORDS = {"u%d@%s" % (i, DOMAIN): "pw-%d secret" % i
             for i in range(1, NUSERS + 1)}
PASSWORDS["x@other.test"] = "other-pw"      # not a local domain
PASSWORDS["nodomain"] = "nodomain-pw"        # no "@domain"


def alloc_ports(n):
    out = []
    for port in range(PORT_FIRST, PORT_LAST + 1):
        if port in _used:
            continue
        s = socket.socket()
        try:
            s.bind((h.HOST, port))
        except OSError:
            continue
        finally:
            s.close()
        _used.add(port)
        out.append(port)
        if len(out) == n:
            return out
    raise RuntimeError("no free ports in %d-%d" % (PORT_FIRST, PORT_LAST))


CONF = """\
load_module @@STREAM_SO@@;
load_module @@RELAY_MODULE@@;
worker_processes 2;
error_log logs/error.log info;
pid logs/nginx.pid;
thread_pool relay threads=8;
events { worker_connections 1024; }
stream {
    relay_spool spool;
    relay_spool_journal_size 16m;
    relay_thread_pool relay;
    relay_maildir maildir;
    relay_hostname relay.test;
    relay_local_domain example.test;
    relay_auth_file conf/pop3users;

    server {
        listen 127.0.0.1:@@smtp@@;
        relay_smtp;
        relay_trusted_networks 127.0.0.0/8;
        relay_max_message_size 20m;
    }

    # STLS required before passwords
    server {
        listen 127.0.0.1:@@pop3@@;
        relay_pop3;
        relay_starttls on;
        ssl_certificate conf/cert.pem;
        ssl_certificate_key conf/key.pem;
        relay_max_errors 50;
        relay_timeout 30s;
    }

    # implicit TLS (port 995 style)
    server {
        listen 127.0.0.1:@@pop3s@@ ssl;
        relay_pop3;
        ssl_certificate conf/cert.pem;
        ssl_certificate_key conf/key.pem;
    }

    # plaintext passwords allowed, no TLS at all
    server {
        listen 127.0.0.1:@@plain@@;
        relay_pop3;
        relay_pop3_plaintext on;
    }

    # short limits
    server {
        listen 127.0.0.1:@@strict@@;
        relay_pop3;
        relay_pop3_plaintext on;
        relay_max_errors 3;
        relay_timeout 1s;
    }
}
"""

NAMES = ("smtp", "pop3", "pop3s", "plain", "strict")


class Pop3Nginx(h.Nginx):

    def write_conf(self, workers=None, stream_extra=None):
        conf = CONF.replace("@@STREAM_SO@@", h.STREAM_SO) \
                   .replace("@@RELAY_MODULE@@", h.RELAY_MODULE)
        for k, v in self.ports.items():
            conf = conf.replace("@@%s@@" % k, str(v))
        assert "@@" not in conf
        (self.prefix / "nginx.conf").write_text(conf)

    def start(self, timeout=15):
        stderr = open(self.prefix / "logs" / "stderr.log", "ab")
        self.proc = subprocess.Popen(
            self._cmd("-g", "daemon off;"), stdin=subprocess.DEVNULL,
            stdout=stderr, stderr=stderr, start_new_session=True)
        stderr.close()

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("nginx exited:\n"
                                     + self.logs_text()[-3000:])
            try:
                h.SMTPConn(self.ports["smtp"], timeout=2).close()
                for name in ("pop3", "plain", "strict"):
                    with socket.create_connection(
                            (h.HOST, self.ports[name]), timeout=2) as s:
                        if not s.recv(100).startswith(b"+OK"):
                            return False
                return True
            except (OSError, AssertionError, EOFError):
                return False

        h.wait_until(ready, timeout, what="nginx to greet")
        return self


@pytest.fixture(scope="module")
def ng(certs):
    h.require_module()
    # not below /tmp/pytest-of-root: a concurrent pytest run makes that
    # 0700 again, and the workers (nobody) lose their way to the Maildirs
    base = Path(tempfile.mkdtemp(prefix="relay-pop3-"))
    prefix = h.make_prefix(base / "prefix", certs)
    pws = list(PASSWORDS.values())
    r = subprocess.run(["openssl", "passwd", "-6", "-stdin"],
                       input=("\n".join(pws) + "\n").encode(),
                       check=True, capture_output=True, timeout=60)
    hashes = r.stdout.decode().split()
    assert len(hashes) == len(pws)
    (prefix / "conf" / "pop3users").write_text(
        "".join("%s:%s\n" % (u, hs) for u, hs in zip(PASSWORDS, hashes)))
    os.chmod(prefix / "conf" / "pop3users", 0o644)
    ports = dict(zip(NAMES, alloc_ports(len(NAMES))))
    n = Pop3Nginx(prefix, ports)
    n.start()
    yield n
    n.stop()
    n.assert_log_clean()
    assert "[crit]" not in n.error_log(), n.error_log()[-3000:]
    shutil.rmtree(base, ignore_errors=True)


_free_users = ["u%d@%s" % (i, DOMAIN) for i in range(1, NUSERS + 1)]


@pytest.fixture
def user():
    """A mailbox no other test uses: (login, password)."""
    u = _free_users.pop(0)
    return u, PASSWORDS[u]


def ctx():
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c


def pop(ng, login=None, port="pop3"):
    """A poplib session on the STLS server, after STLS (and logged in)."""
    p = poplib.POP3(h.HOST, ng.port(port), timeout=10)
    if port == "pop3":
        p.stls(ctx())
    if login:
        p.user(login[0])
        p.pass_(login[1])
    return p


def mailbox(ng, login):
    local, domain = login.split("@")
    return ng.maildir / domain / local


def files(ng, login, sub):
    d = mailbox(ng, login) / sub
    return sorted(p for p in d.iterdir()) if d.is_dir() else []


def all_messages(ng, login):
    return files(ng, login, "new") + files(ng, login, "cur")


def deliver(ng, login, body, sender="sender@example.org"):
    before = len(all_messages(ng, login))
    with h.SMTPConn(ng.port("smtp")) as c:
        c.ehlo()
        c.message(sender, [login], body)
    h.wait_until(lambda: len(all_messages(ng, login)) == before + 1,
                 what="delivery to %s" % login)
    new = [p for p in files(ng, login, "new")]
    return max(new, key=lambda p: p.stat().st_mtime_ns)


def body_of(marker, extra=b""):
    return (b"From: <sender@example.org>\r\nTo: <x@example.test>\r\n"
            b"Subject: pop3 " + marker.encode() + b"\r\n\r\n"
            b"line one " + marker.encode() + b"\r\n" + extra +
            b"last line\r\n")


class Raw:
    """A raw POP3 client: checks CRLF on every line."""

    def __init__(self, port, tls=False):
        self.sock = socket.create_connection((h.HOST, port), timeout=10)
        if tls:
            self.sock = ctx().wrap_socket(self.sock)
        self.buf = b""
        self.greeting = self.line()

    def send(self, data):
        self.sock.sendall(data if isinstance(data, bytes)
                          else data.encode())

    def line(self):
        while b"\r\n" not in self.buf:
            d = self.sock.recv(65536)
            if not d:
                raise EOFError("closed, buffered %r" % self.buf)
            self.buf += d
        line, self.buf = self.buf.split(b"\r\n", 1)
        assert b"\n" not in line and b"\r" not in line, line
        return line.decode("latin-1")

    def cmd(self, line):
        self.send(line + "\r\n")
        return self.line()

    def multi(self):
        """The lines of a multi-line body, unstuffed, up to "."."""
        out = []
        while True:
            l = self.line()
            if l == ".":
                return out
            out.append(l[1:] if l.startswith(".") else l)

    def starttls(self):
        r = self.cmd("STLS")
        assert r.startswith("+OK"), r
        assert self.buf == b""
        self.sock = ctx().wrap_socket(self.sock)

    def login(self, login):
        r = self.cmd("USER " + login[0])
        assert r.startswith("+OK"), r
        r = self.cmd("PASS " + login[1])
        assert r.startswith("+OK"), r
        return r

    def closed(self, timeout=5):
        self.sock.settimeout(timeout)
        try:
            while True:
                d = self.sock.recv(65536)
                if not d:
                    return True
                self.buf += d
        except socket.timeout:
            return False
        except (ConnectionResetError, ssl.SSLError):
            return True

    def close(self):
        self.sock.close()


def joined(lines):
    return b"".join(l + b"\r\n" for l in lines)


def uid_of(path):
    return path.name.split(":")[0]


# --------------------------------------------------------------------------
# capabilities, TLS, login


def test_capa_before_and_after_stls(ng):
    r = Raw(ng.port("pop3"))
    assert r.greeting.startswith("+OK relay.test"), r.greeting
    assert r.cmd("CAPA").startswith("+OK")
    caps = r.multi()
    assert "STLS" in caps and "USER" not in caps, caps
    assert not any(c.startswith("SASL") for c in caps), caps
    for c in ("TOP", "UIDL", "RESP-CODES", "PIPELINING"):
        assert c in caps, caps
    r.starttls()
    assert r.cmd("CAPA").startswith("+OK")
    caps = r.multi()
    assert "STLS" not in caps and "USER" in caps, caps
    assert "SASL PLAIN" in caps, caps
    assert r.cmd("STLS").startswith("-ERR ")
    r.close()


def test_plaintext_refused_without_stls(ng, user):
    r = Raw(ng.port("pop3"))
    for line in ("USER " + user[0], "PASS " + user[1],
                 "AUTH PLAIN " + h.auth_plain_token(*user)):
        resp = r.cmd(line)
        assert resp.startswith("-ERR [AUTH] "), (line, resp)
    # still in AUTHORIZATION; no mailbox was opened
    assert r.cmd("STAT").startswith("-ERR ")
    assert not mailbox(ng, user[0]).exists()
    r.close()

    # curl insisting on TLS gets it; without TLS it cannot log in
    out = subprocess.run(
        ["curl", "-s", "pop3://%s:%d/" % (h.HOST, ng.port("pop3")),
         "-u", "%s:%s" % user], capture_output=True, timeout=30)
    assert out.returncode != 0, out


def test_login_good_and_bad(ng, user):
    for login in ((user[0], "wrong"), ("nobody@example.test", "x"),
                  ("x@other.test", "other-pw"), ("nodomain", "nodomain-pw"),
                  (user[0], "")):
        p = pop(ng)
        p.user(login[0])
        with pytest.raises(poplib.error_proto) as e:
            p.pass_(login[1])
        assert e.value.args[0].startswith(b"-ERR [AUTH] "), (login, e.value)
        # the session goes on in AUTHORIZATION
        p.user(user[0])
        assert p.pass_(user[1]).startswith(b"+OK")
        p.quit()

    # the login is case-insensitive, like SMTP AUTH
    p = pop(ng, (user[0].upper(), user[1]))
    assert p.stat() == (0, 0)
    p.quit()
    assert (mailbox(ng, user[0]) / "cur").is_dir()
    assert "pop3 authentication failed for \"%s\"" % user[0] in ng.error_log()


def test_auth_plain(ng, user):
    r = Raw(ng.port("pop3"))
    r.starttls()
    assert r.cmd("AUTH PLAIN " + h.auth_plain_token(user[0], "bad"))\
        .startswith("-ERR [AUTH] ")
    assert r.cmd("AUTH PLAIN") == "+ "
    assert r.cmd("*").startswith("-ERR ")
    assert r.cmd("AUTH PLAIN") == "+ "
    assert r.cmd("%%%not base64").startswith("-ERR ")
    assert r.cmd("AUTH CRAM-MD5").startswith("-ERR ")
    assert r.cmd("AUTH PLAIN") == "+ "
    assert r.cmd(h.auth_plain_token(*user)).startswith("+OK")
    assert r.cmd("STAT") == "+OK 0 0"
    assert r.cmd("AUTH PLAIN").startswith("-ERR ")
    assert r.cmd("QUIT").startswith("+OK")
    r.close()


def test_implicit_tls(ng, user):
    p = poplib.POP3_SSL(h.HOST, ng.port("pop3s"), timeout=10, context=ctx())
    caps = p.capa()
    assert "USER" in caps and "STLS" not in caps, caps
    with pytest.raises(poplib.error_proto):
        p._shortcmd("STLS")
    p.user(user[0])
    p.pass_(user[1])
    assert p.stat() == (0, 0)
    p.quit()


def test_plaintext_listener(ng, user):
    m = deliver(ng, user[0], body_of("plainlistener"))
    p = poplib.POP3(h.HOST, ng.port("plain"), timeout=10)
    assert "USER" in p.capa() and "STLS" not in p.capa()
    p.user(user[0])
    p.pass_(user[1])
    _, lines, _ = p.retr(1)
    assert joined(lines) == (mailbox(ng, user[0]) / "cur" /
                             (m.name + ":2,")).read_bytes()
    p.quit()


# --------------------------------------------------------------------------
# the maildrop


def test_list_uidl_top_retr_byte_exact(ng, user):
    bodies = [
        body_of("first"),
        body_of("dots", b".leading dot\r\n..two dots\r\n.\r\n"
                        b"a line\r\n\r\nafter an empty line\r\n"),
        body_of("long", b"x" * 998 + b"\r\n" + b"." * 998 + b"\r\n"),
    ]
    paths = []
    for b in bodies:
        paths.append(deliver(ng, user[0], b))
        time.sleep(0.02)            # distinct delivery times, fixed order
    stored = [p.read_bytes() for p in paths]
    for b, s in zip(bodies, stored):
        assert s.endswith(b), "the maildir file is not what SMTP accepted"
        assert s.startswith(b"Return-Path: <sender@example.org>\r\n"
                            b"Delivered-To: " + user[0].encode() + b"\r\n")

    p = pop(ng, user)
    assert p.stat() == (3, sum(len(s) for s in stored))
    resp, listing, _ = p.list()
    assert [l.decode() for l in listing] == \
        ["%d %d" % (i + 1, len(s)) for i, s in enumerate(stored)]
    assert p.list(2) == b"+OK 2 %d" % len(stored[1])
    _, uidls, _ = p.uidl()
    assert [l.decode() for l in uidls] == \
        ["%d %s" % (i + 1, uid_of(pth)) for i, pth in enumerate(paths)]
    for u in uidls:
        assert re.match(rb"^\d+ [\x21-\x7e]{1,70}$", u), u

    # TOP: the header, the empty line, n lines of the body
    for n in (0, 2, 100):
        _, lines, _ = p.top(2, n)
        head, _, body = stored[1].partition(b"\r\n\r\n")
        want = head + b"\r\n\r\n" + b"".join(
            l + b"\r\n" for l in body.split(b"\r\n")[:-1][:n])
        assert joined(lines) == want, (n, lines)
    # TOP leaves messages in new/
    assert len(files(ng, user[0], "new")) == 3

    for i, s in enumerate(stored):
        resp, lines, octets = p.retr(i + 1)
        assert resp == b"+OK %d octets" % len(s)
        assert joined(lines) == s
        assert octets == len(s)

    # read mail moves to cur/ as "<name>:2,"
    assert files(ng, user[0], "new") == []
    assert [c.name for c in files(ng, user[0], "cur")] == \
        sorted(pth.name + ":2," for pth in paths)
    p.quit()

    # UIDs and numbering are stable across sessions and the rename
    p = pop(ng, user)
    _, uidls2, _ = p.uidl()
    assert uidls2 == uidls
    assert p.uidl(3) == b"+OK 3 " + uid_of(paths[2]).encode()
    _, lines, _ = p.retr(2)
    assert joined(lines) == stored[1]
    p.quit()


def test_raw_dot_stuffing_on_the_wire(ng, user):
    body = body_of("wire", b".\r\n..\r\n.x\r\n")
    size = deliver(ng, user[0], body).stat().st_size
    r = Raw(ng.port("pop3"))
    r.starttls()
    r.login(user)
    r.send("RETR 1\r\n")
    assert r.line() == "+OK %d octets" % size
    raw = b""
    while not raw.endswith(b"\r\n.\r\n"):
        raw += r.sock.recv(65536) if not r.buf else r.buf
        r.buf = b""
    assert b"\r\n..\r\n...\r\n..x\r\n" in raw, raw
    assert raw.endswith(b"last line\r\n.\r\n")
    r.close()


def test_lf_only_and_unterminated_files(ng, user):
    """Files from another delivery agent: LF line ends, no final line end;
    sizes count what RETR sends (CRLF, stuffing excluded)."""
    deliver(ng, user[0], body_of("first"))
    new = mailbox(ng, user[0]) / "new"
    uid, gid = os.stat(new).st_uid, os.stat(new).st_gid
    lf = b"Subject: lf\n\n.dot\nbody\n"
    unterminated = b"Subject: cut\r\n\r\nno end"
    for i, data in enumerate((lf, unterminated)):
        f = new / ("2000000000.other%d.host" % i)
        f.write_bytes(data)
        os.chown(f, uid, gid)
        os.utime(f, (2000000000 + i, 2000000000 + i))
    want = [b"Subject: lf\r\n\r\n.dot\r\nbody\r\n",
            b"Subject: cut\r\n\r\nno end\r\n"]

    p = pop(ng, user)
    count, _ = p.stat()
    assert count == 3
    for i, w in enumerate(want):
        assert p.list(2 + i) == b"+OK %d %d" % (2 + i, len(w))
        _, lines, octets = p.retr(2 + i)
        assert joined(lines) == w
        assert octets == len(w)
    assert p.uidl(2) == b"+OK 2 2000000000.other0.host"
    p.quit()


def test_large_message_streams(ng, user):
    line = b"0123456789" * 7 + b"\r\n"
    big = body_of("big", line * 60000 + b".\r\n" * 1000)   # about 4.3 MB
    path = deliver(ng, user[0], big)
    stored = path.read_bytes()
    assert len(stored) > 4 * 1024 * 1024

    p = pop(ng, user)
    _, lines, octets = p.retr(1)
    assert octets == len(stored)
    assert joined(lines) == stored
    p.quit()

    # curl: RETR by number, output byte for byte
    out = subprocess.run(
        ["curl", "-s", "--ssl-reqd", "-k",
         "pop3://%s:%d/1" % (h.HOST, ng.port("pop3")),
         "-u", "%s:%s" % user], capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout == stored


def test_curl(ng, user):
    paths = [deliver(ng, user[0], body_of("curl%d" % i)) for i in range(2)]
    base = ["curl", "-s", "--ssl-reqd", "-k", "-u", "%s:%s" % user]
    url = "pop3://%s:%d/" % (h.HOST, ng.port("pop3"))

    out = subprocess.run(base + [url], capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    sizes = sorted(p.stat().st_size for p in paths)
    assert sorted(int(l.split()[1]) for l in out.stdout.splitlines()) \
        == sizes

    stored = {p.name: p.read_bytes() for p in paths}
    out = subprocess.run(base + [url + "1"], capture_output=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout in stored.values()

    out = subprocess.run(base + ["-X", "UIDL", url], capture_output=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert {l.split()[1].decode() for l in out.stdout.splitlines()} == \
        {uid_of(p) for p in paths}

    out = subprocess.run(base + ["-X", "TOP 2 0", url], capture_output=True,
                         timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.endswith(b"\r\n\r\n")
    assert b"Subject: pop3 curl" in out.stdout

    bad = ["curl", "-s", "--ssl-reqd", "-k", "-u", user[0] + ":nope", url]
    out = subprocess.run(bad, capture_output=True, timeout=30)
    assert out.returncode == 67, out         # CURLE_LOGIN_DENIED


# --------------------------------------------------------------------------
# deletion and the UPDATE state


def test_dele_quit_removes(ng, user):
    paths = [deliver(ng, user[0], body_of("del%d" % i)) for i in range(3)]
    time.sleep(0.01)
    p = pop(ng, user)
    _, uidls, _ = p.uidl()
    assert p.dele(2).startswith(b"+OK")
    with pytest.raises(poplib.error_proto) as e:
        p.dele(2)
    assert b"deleted" in e.value.args[0]
    with pytest.raises(poplib.error_proto):
        p.retr(2)
    count, size = p.stat()
    assert count == 2
    _, listing, _ = p.list()
    assert [l.split()[0] for l in listing] == [b"1", b"3"]
    # nothing removed before QUIT
    assert len(all_messages(ng, user[0])) == 3
    resp = p.quit()
    assert resp.startswith(b"+OK") and b"2 messages left" in resp, resp

    left = all_messages(ng, user[0])
    gone = uidls[1].split()[1].decode()
    assert len(left) == 2 and gone not in {uid_of(x) for x in left}
    assert all(not pth.exists() or uid_of(pth) != gone for pth in paths)

    p = pop(ng, user)
    _, uidls2, _ = p.uidl()
    assert [u.split()[1] for u in uidls2] == \
        [uidls[0].split()[1], uidls[2].split()[1]]
    p.quit()
    h.wait_until(lambda: re.search(
        r"pop3 session end: user=%s, messages=3, retrieved=0, deleted=1, "
        r"quit" % re.escape(user[0]), ng.error_log()),
        what="session end log line")


def test_dele_rset_keeps(ng, user):
    for i in range(2):
        deliver(ng, user[0], body_of("rset%d" % i))
    before = sorted(all_messages(ng, user[0]))
    p = pop(ng, user)
    total = p.stat()
    p.dele(1)
    p.dele(2)
    assert p.stat() == (0, 0)
    assert p.rset().startswith(b"+OK")
    assert p.stat() == total
    p.quit()
    assert sorted(all_messages(ng, user[0])) == before


def test_dropped_connection_keeps_everything(ng, user):
    for i in range(2):
        deliver(ng, user[0], body_of("drop%d" % i))
    before = sorted(all_messages(ng, user[0]))
    r = Raw(ng.port("pop3"))
    r.starttls()
    r.login(user)
    assert r.cmd("DELE 1").startswith("+OK")
    assert r.cmd("DELE 2").startswith("+OK")
    r.sock.close()                  # no QUIT: no UPDATE state

    def relogin():
        try:
            p = pop(ng, user)
        except poplib.error_proto as e:
            assert b"[IN-USE]" in e.args[0], e
            return None
        return p
    p = h.wait_until(relogin, what="the mailbox to be released")
    assert p.stat()[0] == 2
    p.quit()
    assert sorted(all_messages(ng, user[0])) == before
    assert "retrieved=0, deleted=0, no quit" in ng.error_log()


def test_concurrent_login_refused(ng, user):
    deliver(ng, user[0], body_of("inuse"))
    first = pop(ng, user)
    # a second session, through both workers and both listeners
    for port in ("pop3", "pop3s", "pop3", "plain"):
        if port == "pop3s":
            p = poplib.POP3_SSL(h.HOST, ng.port(port), timeout=10,
                                context=ctx())
        else:
            p = pop(ng, port=port)
        p.user(user[0])
        with pytest.raises(poplib.error_proto) as e:
            p.pass_(user[1])
        assert e.value.args[0].startswith(b"-ERR [IN-USE] "), e.value
        p.quit()
    # a wrong password still says [AUTH], not [IN-USE]
    p = pop(ng)
    p.user(user[0])
    with pytest.raises(poplib.error_proto) as e:
        p.pass_("wrong")
    assert e.value.args[0].startswith(b"-ERR [AUTH] ")
    p.quit()

    assert first.dele(1).startswith(b"+OK")
    first.quit()
    p = pop(ng, user)
    assert p.stat() == (0, 0)
    p.quit()


# --------------------------------------------------------------------------
# protocol robustness


def test_pipelining(ng, user):
    paths = [deliver(ng, user[0], body_of("pipe%d" % i)) for i in range(2)]
    time.sleep(0.01)
    stored = sorted((p.stat().st_mtime_ns, p.name, p.read_bytes())
                    for p in paths)
    r = Raw(ng.port("pop3"))
    r.starttls()
    r.send("USER %s\r\nPASS %s\r\nSTAT\r\nLIST\r\nUIDL 2\r\nRETR 1\r\n"
           "TOP 2 0\r\nNOOP\r\nBOGUS\r\nQUIT\r\n" % user)
    assert r.line().startswith("+OK")
    assert r.line().startswith("+OK Logged in, 2 messages")
    assert r.line() == "+OK 2 %d" % sum(len(s[2]) for s in stored)
    assert r.line().startswith("+OK")
    assert len(r.multi()) == 2
    assert r.line() == "+OK 2 " + stored[1][1]
    assert r.line() == "+OK %d octets" % len(stored[0][2])
    got = r.multi()
    assert "".join(l + "\r\n" for l in got).encode("latin-1") == stored[0][2]
    assert r.line().startswith("+OK")
    assert r.multi()[-1] == ""
    assert r.line() == "+OK"
    assert r.line().startswith("-ERR ")
    assert r.line().startswith("+OK")
    assert r.closed()


def test_garbage_survived(ng, user):
    deliver(ng, user[0], body_of("garbage"))
    r = Raw(ng.port("pop3"))
    for junk in (b"\x00\x01\x02\xff\xfe\r\n", b"\xc3\xa9t\xc3\xa9\r\n",
                 b"A" * 3000 + b"\r\n", b"   \r\n", b"\r\n",
                 b"LIST\x00 1\r\n", b"RETR\r\n", b"QUITX\r\n",
                 b"USERNAME x\r\n", b"\x16\x03\x01\x02\x00\x01\x00\r\n"):
        r.send(junk)
        resp = r.line()
        assert re.match(r"^-ERR \S", resp), (junk, resp)
    assert r.cmd("NOOP").startswith("-ERR ")        # not logged in yet
    r.starttls()
    r.login(user)
    for cmd in ("RETR 0", "RETR 2", "RETR x", "RETR 99999999999999",
                "TOP 1", "TOP 1 -1", "TOP 1 x", "DELE", "LIST 1 2",
                "STAT 1", "RSET x", "USER again", "STLS", "UIDL 0",
                "RETR 1 2", "NOOP x y z"):
        resp = r.cmd(cmd)
        assert re.match(r"^-ERR \S", resp), (cmd, resp)
    assert r.cmd("NOOP") == "+OK"
    assert r.cmd("STAT").startswith("+OK 1 ")
    assert r.cmd("QUIT").startswith("+OK")
    assert r.closed()
    assert len(all_messages(ng, user[0])) == 1


def test_too_many_errors_close(ng):
    r = Raw(ng.port("strict"))
    assert r.cmd("FOO").startswith("-ERR ")
    assert r.cmd("BAR").startswith("-ERR ")
    assert r.cmd("BAZ").startswith("-ERR ")
    assert r.line().startswith("-ERR Too many errors")
    assert r.closed()


def test_idle_timeout_closes(ng, user):
    deliver(ng, user[0], body_of("idle"))
    r = Raw(ng.port("strict"))
    r.login(user)
    assert r.cmd("DELE 1").startswith("+OK")
    t = time.monotonic()
    assert r.closed(timeout=5)
    assert 0.5 < time.monotonic() - t < 4
    assert r.buf == b""             # RFC 1939: no response at autologout
    # no UPDATE: the message stays, the mailbox is free again
    assert len(all_messages(ng, user[0])) == 1
    p = h.wait_until(lambda: _try_login(ng, user), what="mailbox released")
    assert p.stat()[0] == 1
    p.quit()


def test_slow_line_is_timed_out(ng):
    # relay_timeout 1s for a whole line: a byte every 0.3 s never makes one
    r = Raw(ng.port("strict"))
    t = time.monotonic()
    closed = False
    for ch in b"USER slowloris@example.test":
        try:
            r.send(bytes([ch]))
        except OSError:
            closed = True
            break
        time.sleep(0.3)
        if time.monotonic() - t > 4:
            break
    assert closed or r.closed(timeout=5)
    assert time.monotonic() - t < 4, "a trickle kept the session open"


def _try_login(ng, user):
    try:
        return pop(ng, user)
    except poplib.error_proto:
        return None


def test_size_cache(ng, user):
    """relay-pop3.sizes keeps the sizes of the last listing; a stale or
    broken one is never trusted for a file of another size."""
    deliver(ng, user[0], body_of("cache0"))
    new = mailbox(ng, user[0]) / "new"
    uid, gid = os.stat(new).st_uid, os.stat(new).st_gid
    f = new / "2000000100.lfonly.host"
    f.write_bytes(b"Subject: lf\n\nbody\n")        # 18 octets, 21 as sent
    os.chown(f, uid, gid)
    os.utime(f, (2000000100, 2000000100))

    def sizes():
        p = pop(ng, user)
        _, listing, _ = p.list()
        p.quit()
        return [int(l.split()[1]) for l in listing]

    first = sizes()
    assert first[1] == 21
    cache = mailbox(ng, user[0]) / "relay-pop3.sizes"
    lines = cache.read_bytes().splitlines()
    assert b"21 18 2000000100.lfonly.host" in lines, lines
    assert len(lines) == 2

    # an entry for another file size is not used
    cache.write_bytes(b"999 17 2000000100.lfonly.host\n")
    assert sizes() == first
    assert b"21 18 2000000100.lfonly.host" in \
        cache.read_bytes().splitlines()

    # garbage and a torn last line
    cache.write_bytes(b"\x00\xff junk\nx y z\n1 2\n21 18 2000000100.lf")
    assert sizes() == first
    assert len(cache.read_bytes().splitlines()) == 2


def test_stls_discards_pipelined_plaintext(ng, user):
    r = Raw(ng.port("pop3"))
    r.send("STLS\r\nUSER %s\r\nPASS %s\r\n" % user)
    assert r.line().startswith("+OK")
    assert r.buf == b""
    r.sock = ctx().wrap_socket(r.sock)
    # the plaintext USER/PASS were dropped: nothing answers them, and PASS
    # now has no USER
    assert r.cmd("PASS " + user[1]).startswith("-ERR ")
    assert r.cmd("STAT").startswith("-ERR ")
    r.login(user)
    assert r.cmd("QUIT").startswith("+OK")
    r.close()


def test_killed_worker_releases_the_lock(ng, user):
    deliver(ng, user[0], body_of("kill"))
    first = pop(ng, user)
    p = pop(ng)
    p.user(user[0])
    with pytest.raises(poplib.error_proto) as e:
        p.pass_(user[1])
    assert b"[IN-USE]" in e.value.args[0]
    p.quit()

    # which worker holds the lock: the one with the lock file open
    lock = str(mailbox(ng, user[0]) / "relay-pop3.lock")

    def holder():
        for pid in ng.worker_pids():
            try:
                fds = os.listdir("/proc/%d/fd" % pid)
            except OSError:
                continue
            for fd in fds:
                try:
                    if os.readlink("/proc/%d/fd/%s" % (pid, fd)) == lock:
                        return pid
                except OSError:
                    pass
        return None
    pid = h.wait_until(holder, what="a worker holding the lock")
    ng.allowed_alerts.append(r"worker process %d exited on signal 9" % pid)
    os.kill(pid, 9)
    h.wait_until(lambda: pid not in ng.worker_pids(), what="worker gone")

    p = h.wait_until(lambda: _try_login(ng, user), what="lock released")
    assert p.stat()[0] == 1
    p.quit()
    first.sock.close()
    assert len(all_messages(ng, user[0])) == 1


def test_client_vanishes_mid_retr(ng, user):
    big = body_of("vanish", (b"y" * 78 + b"\r\n") * 40000)    # 3.2 MB
    deliver(ng, user[0], big)
    r = Raw(ng.port("pop3"))
    r.starttls()
    r.login(user)
    r.send("RETR 1\r\n")
    assert r.line().startswith("+OK ")
    got = len(r.buf)
    while got < 100000:
        got += len(r.sock.recv(65536))
    r.sock.close()                  # with most of the message unsent

    p = h.wait_until(lambda: _try_login(ng, user), what="mailbox released")
    assert p.stat()[0] == 1
    _, lines, octets = p.retr(1)
    assert joined(lines) == all_messages(ng, user[0])[0].read_bytes()
    p.quit()
