"""
Harness for the outbound delivery tests (test_delivery.py).

Owns:
  * DNS: a dnsmasq (Debian dnsmasq-base) on 127.0.0.1 with MX, null MX and A
    records, NODATA/NXDOMAIN for the rest of `.test`; names that must fail
    are forwarded by dnsmasq to a tiny Python UDP stub that answers SERVFAIL
    or never answers (timeout).  Queries are logged (stderr of dnsmasq) so a
    test can assert that a name was, or was not, looked up.
  * SMTP sinks: raw-socket SMTP servers on 127.0.0.x:PORT (any address of
    127/8 works on Linux without setup), one thread per connection,
    recording every session and transaction; configurable replies at
    connect / EHLO / MAIL / RCPT (per recipient) / DATA / end of data, holds
    (to freeze a delivery at a chosen point), extensions (PIPELINING, SIZE,
    8BITMIME, SMTPUTF8, STARTTLS with a self-signed certificate, CHUNKING),
    replies split across packets, and hostile scripts (garbage, overlong
    lines, unterminated replies, endless multiline, close mid-reply,
    silence).  Counts concurrent connections.
  * the relay side: the delivery directives (stream_extra for relayharness),
    an `nginx -t` probe for directives the module does not know yet, the
    delivery log line parser, queue-state readers and a DSN reader/checker.

Ports: 23000-23999 (probed on every address they are used on); relayharness
keeps 22000-22999 for nginx.  Nothing here sleeps to wait for something:
waits are relayharness.wait_until on a condition.
"""

import email
import email.policy
import os
import re
import select
import shutil
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import relayharness as h


DNSMASQ = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
PORT_FIRST, PORT_LAST = 23000, 23999
_used_ports = set()


# --------------------------------------------------------------------------
# ports


def _family(ip):
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


def _free(ip, port, kind):
    s = socket.socket(_family(ip), kind)
    try:
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((ip, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def tcp_port_free(port, ips):
    return all(_free(ip, port, socket.SOCK_STREAM) for ip in ips)


def alloc_port(tcp_ips=("127.0.0.1",), udp_ips=()):
    """A port of 23000-23999 free for TCP on every address of tcp_ips and
    for UDP on udp_ips; never handed out twice by this process."""
    for port in range(PORT_FIRST, PORT_LAST + 1):
        if port in _used_ports:
            continue
        if all(_free(ip, port, socket.SOCK_STREAM) for ip in tcp_ips) and \
                all(_free(ip, port, socket.SOCK_DGRAM) for ip in udp_ips):
            _used_ports.add(port)
            return port
    raise RuntimeError("no free port in %d-%d" % (PORT_FIRST, PORT_LAST))


# --------------------------------------------------------------------------
# DNS


def _qname(data, off=12):
    labels = []
    while True:
        n = data[off]
        if n == 0:
            return ".".join(labels).lower(), off + 1
        if n & 0xC0:
            raise ValueError("compressed name in a question")
        labels.append(data[off + 1:off + 1 + n].decode("ascii", "replace"))
        off += n + 1


def _in_domain(name, domains):
    return any(name == d or name.endswith("." + d) for d in domains)


class StubDns(threading.Thread):
    """UDP responder for names that must fail: SERVFAIL for `servfail`
    domains, no answer at all for `drop` domains, REFUSED otherwise."""

    def __init__(self, port, servfail=(), drop=()):
        super().__init__(daemon=True)
        self.port = port
        self.servfail = [d.lower().rstrip(".") for d in servfail]
        self.drop = [d.lower().rstrip(".") for d in drop]
        self.queries = []                       # (name, qtype, action)
        self._halt = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", port))
        self.sock.settimeout(0.2)

    def run(self):
        while not self._halt.is_set():
            try:
                data, addr = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                name, end = _qname(data)
                qtype = struct.unpack("!H", data[end:end + 2])[0]
                question = data[12:end + 4]
            except (ValueError, IndexError, struct.error):
                continue
            if _in_domain(name, self.drop):
                self.queries.append((name, qtype, "drop"))
                continue
            rcode = 2 if _in_domain(name, self.servfail) else 5
            self.queries.append((name, qtype, rcode))
            flags = bytes([0x80 | (data[2] & 0x79), 0x80 | rcode])
            resp = data[:2] + flags + struct.pack("!HHHH", 1, 0, 0, 0) \
                + question
            try:
                self.sock.sendto(resp, addr)
            except OSError:
                pass

    def stop(self):
        self._halt.set()
        self.join(2)
        self.sock.close()


def dns_query(port, name, qtype=15, timeout=1.0):
    """(rcode, ancount) of one UDP query to 127.0.0.1:port, or None."""
    qid = os.getpid() & 0xFFFF
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    q += b"\0" + struct.pack("!HH", qtype, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    try:
        s.sendto(q, ("127.0.0.1", port))
        data, _ = s.recvfrom(4096)
    except OSError:
        return None
    finally:
        s.close()
    return data[3] & 0x0F, struct.unpack("!H", data[6:8])[0]


class Zone:
    """What the test DNS knows: everything under `.test` that is not listed
    is NXDOMAIN; a listed name without records of a type is NODATA."""

    def __init__(self):
        self.mx = []            # (domain, host, pref); host "." = null MX
        self.a = []             # (name, ipv4)
        self.servfail = []      # domains answered SERVFAIL
        self.timeout = []       # domains never answered

    def add_mx(self, domain, host, pref=10, ip=None):
        self.mx.append((domain, host, pref))
        if ip:
            self.add_a(host, ip)
        return self

    def null_mx(self, domain):
        self.mx.append((domain, ".", 0))
        return self

    def add_a(self, name, ip):
        if (name, ip) not in self.a:
            self.a.append((name, ip))
        return self


class DnsServer:
    """dnsmasq for a Zone (plus the failure stub), on 127.0.0.1:port."""

    def __init__(self, workdir, zone):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.zone = zone
        self.port = None
        self.proc = None
        self.stub = None
        self.log_path = self.workdir / "dnsmasq.log"

    def args(self):
        z = self.zone
        a = [DNSMASQ, "--keep-in-foreground", "--log-facility=-",
             "--log-queries", "--port=%d" % self.port,
             "--listen-address=127.0.0.1", "--bind-interfaces",
             "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
             "--pid-file=", "--cache-size=0", "--local-ttl=1",
             "--local=/test/"]
        for d in z.servfail + z.timeout:
            a.append("--server=/%s/127.0.0.1#%d" % (d, self.stub.port))
        for domain, host, pref in z.mx:
            a.append("--mx-host=%s,%s,%d" % (domain, host, pref))
        names = {}
        for name, ip in z.a:
            names.setdefault(name, []).append(ip)
        for name, ips in names.items():
            a.append("--host-record=%s,%s" % (name, ",".join(ips)))
        return a

    def start(self):
        if not os.path.exists(DNSMASQ):
            raise RuntimeError("dnsmasq not installed (dnsmasq-base)")
        self.port = alloc_port(("127.0.0.1",), ("127.0.0.1",))
        stub_port = alloc_port(("127.0.0.1",), ("127.0.0.1",))
        self.stub = StubDns(stub_port, self.zone.servfail, self.zone.timeout)
        self.stub.start()
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args(), stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=log,
                                     start_new_session=True)
        log.close()

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("dnsmasq exited: %s"
                                     % self.log_text()[-2000:])
            return dns_query(self.port, "ready-probe.test", 1, 0.3)

        h.wait_until(ready, 10, what="dnsmasq to answer")
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        if self.stub:
            self.stub.stop()
            self.stub = None

    def log_text(self):
        return self.log_path.read_text(errors="replace") \
            if self.log_path.exists() else ""

    def log_mark(self):
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def queried(self, name, qtype=None, since=0):
        """dnsmasq query log lines for name (and type: MX, A, AAAA)."""
        with open(self.log_path, "rb") as f:
            f.seek(since)
            text = f.read().decode("utf-8", "replace")
        pat = re.compile(r"query\[(\w+)\] (\S+) from")
        out = []
        for line in text.splitlines():
            m = pat.search(line)
            if m and m.group(2).lower() == name.lower() \
                    and (qtype is None or m.group(1) == qtype):
                out.append(line)
        return out


# --------------------------------------------------------------------------
# SMTP sinks

SILENT = "<silent>"         # a reply value: say nothing, keep the connection
CLOSE = "<close>"           # a reply value: close without a reply

DEFAULT_EXT = ("PIPELINING", "SIZE 10485760", "8BITMIME",
               "ENHANCEDSTATUSCODES")
MAX_LINE = 1 << 20
MAX_DATA = 64 << 20


class Txn:
    """One MAIL transaction as the sink saw it."""

    def __init__(self, sess, sender, params):
        self.session = sess
        self.peer = sess.peer
        self.helo = sess.helo
        self.tls = sess.tls
        self.sender = sender
        self.mail_params = params
        self.rcpts = []            # accepted (2xx) recipients
        self.rcpt_log = []         # (address, params, reply) for every RCPT
        self.data = None           # unstuffed content (DATA) or chunks (BDAT)
        self.via = None            # "DATA" or "BDAT"
        self.complete = False      # end of data received
        self.reply = None          # reply chosen for the end of data
        self.accepted = False      # that reply was 2xx
        self.t_end = None

    def __repr__(self):
        return ("Txn(peer=%s helo=%r tls=%r from=<%s> %r rcpts=%r via=%s "
                "complete=%s reply=%r size=%s)"
                % (self.peer, self.helo, self.tls, self.sender,
                   self.mail_params, self.rcpts, self.via, self.complete,
                   self.reply, len(self.data) if self.data is not None
                   else None))


class Session:
    """One connection to a sink."""

    def __init__(self, sink, sock, peer):
        self.sink = sink
        self.sock = sock
        self.peer = peer                # (ip, port) of the relay
        self.buf = b""
        self.helo = None
        self.helos = []                 # every EHLO/HELO argument, in order
        self.tls = None                 # TLS version after STARTTLS
        self.commands = []              # every command line received
        self.pipelined = []             # commands sent before our reply
        self.batched = []               # (verb, more input already there)
        self.injected = b""             # plaintext pipelined after STARTTLS
        self.txns = []
        self.received = 0               # octets received in total
        self.closed_by_peer = False
        self.error = None

    # I/O
    def _recv(self, n=65536):
        while True:
            if self.sink.stopping.is_set():
                raise OSError("sink stopping")
            try:
                d = self.sock.recv(n)
            except socket.timeout:
                continue
            except ssl.SSLWantReadError:
                continue
            if not d:
                self.closed_by_peer = True
            self.received += len(d)
            return d

    def readline(self, limit=MAX_LINE):
        while b"\n" not in self.buf:
            if len(self.buf) > limit:
                raise ValueError("line too long")
            d = self._recv()
            if not d:
                return None
            self.buf += d
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r")

    def read_exact(self, n):
        while len(self.buf) < n:
            d = self._recv()
            if not d:
                return None
            self.buf += d
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def read_data(self):
        """DATA content up to CRLF.CRLF, unstuffed; None if the peer left."""
        while True:
            probe = b"\r\n" + self.buf
            i = probe.find(b"\r\n.\r\n")
            if i != -1:
                raw = probe[2:i + 2]          # content with its last CRLF
                self.buf = probe[i + 5:]
                break
            if len(self.buf) > MAX_DATA:
                raise ValueError("data too long")
            d = self._recv()
            if not d:
                return None
            self.buf += d
        lines = raw.split(b"\r\n")
        return b"\r\n".join(l[1:] if l.startswith(b".") else l
                            for l in lines)

    def pending_input(self):
        """Octets the client sent that we have not read yet."""
        if self.buf:
            return True
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return True
        try:
            r, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return bool(r)

    def raw(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def say(self, reply):
        """Sends a reply (str, possibly multi-line with \\n between lines);
        returns False when the connection must end."""
        if reply == SILENT:
            self.hold()
            return False
        if reply == CLOSE:
            return False
        if isinstance(reply, bytes):
            self.raw(reply + b"\r\n")     # one line, octets as they are
            return not reply.startswith(b"421")
        lines = reply.split("\n")
        code = lines[0][:3]
        text = "".join(
            "%s%s%s\r\n" % (code, "-" if i < len(lines) - 1 else " ",
                             l[4:] if l[:3] == code else l)
            for i, l in enumerate(lines)).encode("utf-8")
        if self.sink.split:
            for i in range(0, len(text), self.sink.split):
                self.raw(text[i:i + self.sink.split])
                time.sleep(self.sink.split_delay)
        else:
            self.raw(text)
        return not code.startswith("421")

    def hold(self):
        """Says nothing until the peer closes or the sink stops."""
        while True:
            try:
                d = self._recv()
            except OSError:
                return
            if not d:
                return


def _addr(arg):
    """(address, params) of 'FROM:<a> P=1' / 'TO:<a>'."""
    m = re.match(r"(?is)^\s*(?:FROM|TO):\s*<([^>]*)>\s*(.*)$", arg)
    if not m:
        return None, None
    return m.group(1), m.group(2).strip()


class Sink:
    """An SMTP server on ip:port recording what it is sent.

    Reply hooks (greeting, ehlo_reply, mail_reply, rcpt_reply, data_reply,
    dot_reply) are a string or a function (session, txn, argument) -> string
    or None (None: the default 2xx/3xx).  Bytes are one reply line sent as
    they are (hostile octets).  A string may hold several lines
    separated by "\\n" (a multiline reply); SILENT and CLOSE are special.
    A 421 reply closes the connection after it.  hold_data / hold_dot are
    threading.Events the session waits on (after DATA, before 354; after
    the end of data, before the reply); reached_data / reached_dot are set
    when a session gets there.  script(session) replaces the whole dialogue
    (hostile servers)."""

    def __init__(self, ip, port, name=None, ehlo_ext=DEFAULT_EXT,
                 greeting=None, ehlo_reply=None, helo_only=False,
                 mail_reply=None, rcpt_reply=None, data_reply=None,
                 dot_reply=None, tls_context=None, script=None,
                 silent=False, split=0, split_delay=0.01):
        self.ip, self.port = ip, port
        self.name = name or "sink-%s-%d" % (ip, port)
        self.ehlo_ext = list(ehlo_ext)
        self.greeting = greeting
        self.ehlo_reply = ehlo_reply
        self.helo_only = helo_only
        self.mail_reply = mail_reply
        self.rcpt_reply = rcpt_reply
        self.data_reply = data_reply
        self.dot_reply = dot_reply
        self.tls_context = tls_context
        self.script = script
        self.silent = silent
        self.split = split
        self.split_delay = split_delay
        self.hold_data = None
        self.hold_dot = None
        self.on_dot_replied = None      # f(session, txn) after that reply
        self.reached_data = threading.Event()
        self.reached_dot = threading.Event()

        self.lock = threading.Lock()
        self.sessions = []
        self.txns = []
        self.connections = 0
        self.active = 0
        self.max_active = 0
        self.errors = []
        self.stopping = threading.Event()
        self.lsock = None
        self.thread = None
        self.counter = 0

    # lifecycle
    def start(self):
        self.stopping.clear()
        s = socket.socket(_family(self.ip), socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.ip, self.port))
        s.listen(128)
        s.settimeout(0.2)
        self.lsock = s
        self.thread = threading.Thread(target=self._accept_loop,
                                       args=(s,), daemon=True)
        self.thread.start()
        return self

    def stop(self):
        """Stops listening (connections are then refused) and ends every
        session."""
        self.stopping.set()
        if self.lsock:
            self.lsock.close()
            self.lsock = None
        if self.thread:
            self.thread.join(2)
            self.thread = None
        with self.lock:
            sessions = list(self.sessions)
        for sess in sessions:
            try:
                sess.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for e in (self.hold_data, self.hold_dot):
            if e is not None:
                e.set()

    @property
    def listening(self):
        return self.lsock is not None

    def _accept_loop(self, lsock):
        while not self.stopping.is_set():
            try:
                conn, peer = lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(conn, peer),
                                 daemon=True)
            t.start()

    # views
    def accepted(self, marker=None):
        """Transactions that got a 2xx at their end (and, given a marker,
        have a recipient or a sender containing it)."""
        with self.lock:
            txns = [t for t in self.txns if t.accepted]
        if marker is None:
            return txns
        return [t for t in txns if any(marker in r for r in t.rcpts)
                or marker in (t.sender or "")]

    def all_txns(self, marker=None):
        with self.lock:
            txns = list(self.txns)
        if marker is None:
            return txns
        return [t for t in txns
                if any(marker in a for a, _, _ in t.rcpt_log)
                or marker in (t.sender or "")]

    def wait_accepted(self, marker, count=1, timeout=15):
        return h.wait_until(
            lambda: len(self.accepted(marker)) >= count
            and self.accepted(marker), timeout,
            what="%d transaction(s) for %r at sink %s (%s:%d); seen: %r"
            % (count, marker, self.name, self.ip, self.port,
               self.all_txns(marker)))

    def reset_holds(self):
        self.hold_data = None
        self.hold_dot = None
        self.on_dot_replied = None
        self.reached_data.clear()
        self.reached_dot.clear()

    # the dialogue
    def _pick(self, hook, sess, txn, arg):
        if hook is None:
            return None
        if callable(hook):
            return hook(sess, txn, arg)
        return hook

    def _serve(self, conn, peer):
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.settimeout(0.5)
        sess = Session(self, conn, peer)
        with self.lock:
            self.sessions.append(sess)
            self.connections += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
        try:
            if self.script:
                self.script(sess)
            elif self.silent:
                sess.hold()
            else:
                self._dialogue(sess)
        except (OSError, ssl.SSLError, ValueError) as e:
            sess.error = repr(e)
        finally:
            try:
                sess.sock.close()
            except OSError:
                pass
            with self.lock:
                self.active -= 1

    def _ehlo_text(self, sess, name):
        ext = [e for e in self.ehlo_ext if e.upper() != "STARTTLS"]
        if self.tls_context is not None and not sess.tls:
            ext.append("STARTTLS")
        return "\n".join(["250 %s greets %s" % (self.name, name)]
                         + ["250 " + e for e in ext])

    def _has(self, ext):
        return any(e.upper().split()[0] == ext for e in self.ehlo_ext)

    def _size_limit(self):
        for e in self.ehlo_ext:
            w = e.split()
            if w[0].upper() == "SIZE" and len(w) > 1 and int(w[1]) > 0:
                return int(w[1])
        return None

    def _dialogue(self, sess):
        g = self._pick(self.greeting, sess, None, None) \
            or "220 %s ESMTP sink" % self.name
        if not sess.say(g):
            return
        refused = not g.startswith("2")      # 554 greeting: only QUIT
        txn = None
        while True:
            line = sess.readline()
            if line is None:
                return
            eod = None
            text = line.decode("utf-8", "replace")
            sess.commands.append(text)
            verb, _, arg = text.partition(" ")
            verb = verb.upper()
            sess.batched.append((verb, sess.pending_input()))
            if verb != "QUIT" and not self._has("PIPELINING") \
                    and sess.pending_input():
                sess.pipelined.append(text)
            if verb == "QUIT":
                sess.say("221 2.0.0 bye")
                return
            if refused:
                if not sess.say("503 5.5.1 no service here"):
                    return
                continue
            if verb == "EHLO":
                if self.helo_only:
                    r = "502 5.5.2 EHLO not implemented"
                else:
                    sess.helo = arg.strip()
                    sess.helos.append(sess.helo)
                    r = self._pick(self.ehlo_reply, sess, None, arg) \
                        or self._ehlo_text(sess, arg.strip())
                txn = None
            elif verb == "HELO":
                sess.helo = arg.strip()
                sess.helos.append(sess.helo)
                r = "250 %s" % self.name
                txn = None
            elif verb == "STARTTLS" and self.tls_context is not None \
                    and not sess.tls:
                if not sess.say("220 2.0.0 go ahead"):
                    return
                sess.injected = sess.buf
                sess.buf = b""
                sess.sock.settimeout(10)
                sess.sock = self.tls_context.wrap_socket(
                    sess.sock, server_side=True)
                sess.sock.settimeout(0.5)
                sess.tls = sess.sock.version()
                sess.helo = None
                txn = None
                continue
            elif verb == "MAIL":
                sender, params = _addr(arg)
                if sender is None:
                    r = "501 5.5.4 syntax"
                elif sess.helo is None:
                    r = "503 5.5.1 EHLO first"
                else:
                    txn = Txn(sess, sender, params)
                    r = self._pick(self.mail_reply, sess, txn, sender)
                    limit = self._size_limit()
                    m = re.search(r"(?i)\bSIZE=(\d+)", params)
                    if r is None and limit and m and int(m.group(1)) > limit:
                        r = "552 5.3.4 message size exceeds fixed limit"
                    if r is None:
                        r = "250 2.1.0 Ok"
                    if not r.startswith("2"):
                        txn = None
                    else:
                        with self.lock:
                            self.txns.append(txn)
                        sess.txns.append(txn)
            elif verb == "RCPT":
                addr, params = _addr(arg)
                if txn is None:
                    r = "503 5.5.1 MAIL first"
                elif addr is None:
                    r = "501 5.5.4 syntax"
                else:
                    r = self._pick(self.rcpt_reply, sess, txn, addr) \
                        or "250 2.1.5 Ok"
                    txn.rcpt_log.append((addr, params, r))
                    if r[:1] in ("2", b"2"):
                        txn.rcpts.append(addr)
            elif verb == "DATA":
                if txn is None or not txn.rcpts:
                    r = "554 5.5.1 no valid recipients"
                else:
                    self.reached_data.set()
                    if self.hold_data is not None:
                        self.hold_data.wait(30)
                    r = self._pick(self.data_reply, sess, txn, None) \
                        or "354 End data with <CR><LF>.<CR><LF>"
                    if r.startswith("354"):
                        if not sess.say(r):
                            return
                        data = sess.read_data()
                        if data is None:
                            return
                        txn.via = "DATA"
                        txn.data = data
                        r = self._end_of_data(sess, txn)
                        eod, txn = txn, None
                        if r is None:
                            return
                    else:
                        txn = None
            elif verb == "BDAT" and self._has("CHUNKING"):
                w = arg.split()
                try:
                    n = int(w[0])
                except (IndexError, ValueError):
                    return
                chunk = sess.read_exact(n)
                if chunk is None:
                    return
                last = len(w) > 1 and w[1].upper() == "LAST"
                if txn is None or not txn.rcpts:
                    r = "503 5.5.1 no transaction"
                else:
                    txn.via = "BDAT"
                    txn.data = (txn.data or b"") + chunk
                    if last:
                        r = self._end_of_data(sess, txn)
                        eod, txn = txn, None
                        if r is None:
                            return
                    else:
                        r = "250 2.0.0 %d octets" % n
            elif verb == "RSET":
                txn = None
                r = "250 2.0.0 Ok"
            elif verb == "NOOP":
                r = "250 2.0.0 Ok"
            else:
                r = "502 5.5.2 command not recognized"
            ok = sess.say(r)
            if eod is not None and self.on_dot_replied is not None:
                self.on_dot_replied(sess, eod)
            if not ok:
                return

    def _end_of_data(self, sess, txn):
        """Records the end of data; returns the reply to send (None: the
        session must end)."""
        txn.complete = True
        txn.t_end = time.monotonic()
        self.reached_dot.set()
        if self.hold_dot is not None:
            self.hold_dot.wait(30)
        r = self._pick(self.dot_reply, sess, txn, None)
        limit = self._size_limit()
        if r is None and limit and len(txn.data) > limit:
            r = "552 5.3.4 message size exceeds fixed limit"
        if r is None:
            with self.lock:
                self.counter += 1
                n = self.counter
            r = "250 2.0.0 Ok: queued as %s-%d" % (self.name, n)
        txn.reply = r
        txn.accepted = r.startswith("2")
        if r == SILENT:
            sess.hold()
            return None
        return r


# hostile scripts (Sink(script=...))

def _reply_each_line(sess, make):
    while True:
        line = sess.readline()
        if line is None:
            return
        sess.commands.append(line.decode("utf-8", "replace"))
        sess.raw(make(line))


def script_garbage(sess):
    """Binary garbage instead of a greeting, and for every command."""
    sess.raw(b"\x00\xff\xfe\x7f\x1b[31mgarbage \x80\x81 no reply code\r\n")
    _reply_each_line(sess, lambda l: b"??\x00\xff\r\nxyz\r\n")


def script_garbage_ehlo(sess):
    """A fine greeting, then a multiline EHLO reply whose second line is not
    a reply line."""
    sess.raw(b"220 hostile ESMTP\r\n")
    _reply_each_line(sess, lambda l: b"250-hostile\r\nThis is not SMTP\x00\r\n"
                     b"250 8BITMIME\r\n")


def script_overlong(sess):
    """A 1 MiB greeting line, and the same for every command."""
    big = b"220 " + b"x" * (1 << 20) + b"\r\n"
    sess.raw(big)
    _reply_each_line(sess, lambda l: b"250 " + b"y" * (1 << 20) + b"\r\n")


def script_unterminated(sess):
    """A greeting without its CRLF, then silence."""
    sess.raw(b"220 hostile greets but never ends the line")
    sess.hold()


def script_endless_multiline(sess):
    """A fine greeting; the EHLO reply is continuation lines that never end
    (16 MiB of them), then silence."""
    sess.raw(b"220 hostile ESMTP\r\n")
    line = sess.readline()
    if line is None:
        return
    sess.commands.append(line.decode("utf-8", "replace"))
    chunk = (b"250-" + b"z" * 70 + b"\r\n") * 512
    sent = 0
    while sent < (16 << 20) and not sess.sink.stopping.is_set():
        try:
            sess.raw(chunk)
        except OSError:
            return
        sent += len(chunk)
    sess.hold()


def script_close_midreply(sess):
    """A fine greeting; half an EHLO reply, then the connection closes."""
    sess.raw(b"220 hostile ESMTP\r\n")
    line = sess.readline()
    if line is None:
        return
    sess.commands.append(line.decode("utf-8", "replace"))
    sess.raw(b"250-hostile\r\n250-PIPEL")


# --------------------------------------------------------------------------
# the relay side

def tls_server_context(certs):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(Path(certs) / "cert.pem"),
                        str(Path(certs) / "key.pem"))
    return ctx


def conf_lines(dns_port, smtp_port, routes=(), backups=(), fallback=None,
               lifetime="1h", resolver_timeout="1s", connect_timeout="1s",
               smtp_timeout="2s", backoff=("1s", "2s"), scan="1s",
               extra=()):
    """The delivery directives, as (directive name, line) pairs; extra:
    more lines ("directive args;")."""
    out = [
        ("relay_delivery", "relay_delivery on;"),
        ("relay_resolver", "relay_resolver 127.0.0.1:%d;" % dns_port),
        ("relay_resolver_timeout",
         "relay_resolver_timeout %s;" % resolver_timeout),
        ("relay_smtp_port", "relay_smtp_port %d;" % smtp_port),
        ("relay_connect_timeout",
         "relay_connect_timeout %s;" % connect_timeout),
        ("relay_smtp_timeout", "relay_smtp_timeout %s;" % smtp_timeout),
        ("relay_retry_backoff", "relay_retry_backoff %s %s;" % backoff),
        ("relay_queue_lifetime", "relay_queue_lifetime %s;" % lifetime),
        ("relay_queue_scan_interval",
         "relay_queue_scan_interval %s;" % scan),
    ]
    for domain, hops in routes:
        out.append(("relay_route", "relay_route %s %s;" % (domain, hops)))
    for domain, hosts in backups:
        out.append(("relay_backup_mx",
                    "relay_backup_mx %s %s;" % (domain, hosts)))
    if fallback:
        out.append(("relay_fallback_relay",
                    "relay_fallback_relay %s;" % fallback))
    for line in extra:
        out.append((line.split()[0], line))
    return out


def stream_extra(lines):
    return "\n".join("    " + l for _, l in lines)


_PROBE_CONF = """\
load_module %(stream)s;
load_module %(module)s;
error_log %(prefix)s/error.log info;
pid %(prefix)s/nginx.pid;
thread_pool relay threads=2;
events { worker_connections 64; }
stream {
    relay_spool %(prefix)s/spool;
    relay_maildir %(prefix)s/maildir;
    relay_thread_pool relay;
    relay_hostname relay.test;
    relay_local_domain example.test;
%(lines)s
    server {
        listen 127.0.0.1:1;
        relay_smtp;
        relay_trusted_networks 127.0.0.0/8;
    }
}
"""


def nginx_t(lines):
    """`nginx -t` of a minimal configuration holding these stream lines;
    None when it passes, else nginx's complaint."""
    d = tempfile.mkdtemp(prefix="relay-probe-")
    try:
        for sub in ("spool", "maildir"):
            os.makedirs(os.path.join(d, sub))
            os.chmod(os.path.join(d, sub), 0o777)
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(_PROBE_CONF % {
                "stream": h.STREAM_SO, "module": h.RELAY_MODULE,
                "prefix": d, "lines": "\n".join("    " + l for l in lines)})
        r = subprocess.run(h.nginx_argv("-t", "-p", d + "/", "-c", conf),
                           capture_output=True, timeout=30)
        if r.returncode == 0:
            return None
        err = r.stderr.decode("utf-8", "replace")
        bad = [l for l in err.splitlines() if "[emerg]" in l]
        return (bad[0] if bad else err.strip()[-500:])
    finally:
        shutil.rmtree(d, ignore_errors=True)


def probe(pairs, base=("relay_delivery on;", "relay_resolver 127.0.0.1:1;")):
    """{directive name: complaint} for those of pairs that nginx -t refuses
    (each tried on its own, on top of `base`)."""
    bad = {}
    for name, line in pairs:
        lines = [b for b in base if b.split()[0] != name] + [line]
        err = nginx_t(lines)
        if err and name not in bad:
            bad[name] = err
    return bad


DELIVERY_RE = re.compile(
    r"(?P<qid>[0-9A-Za-z]+): to=<(?P<rcpt>[^>]*)>, relay=(?P<relay>[^,]*), "
    r"delay=(?P<delay>[0-9.]+), (?:delays=[^,]*, )?dsn=(?P<dsn>\d\.\d{1,3}"
    r"\.\d{1,3}), status=(?P<status>\w+)(?: \((?P<reason>.*)\))?")


def delivery_lines(ng, qid=None, rcpt=None, status=None, since=0):
    """Parsed delivery log lines of error.log (local ones included)."""
    f = ng.prefix / "logs" / "error.log"
    if not f.exists():
        return []
    with open(f, "rb") as fh:
        fh.seek(since)
        text = fh.read().decode("utf-8", "replace")
    out = []
    for line in text.splitlines():
        m = DELIVERY_RE.search(line)
        if not m:
            continue
        d = m.groupdict()
        d["line"] = line
        if qid and d["qid"] != qid:
            continue
        if rcpt and d["rcpt"].lower() != rcpt.lower():
            continue
        if status and d["status"] != status:
            continue
        out.append(d)
    return out


def wait_status(ng, qid, rcpt, status, timeout=15, count=1):
    def look():
        got = delivery_lines(ng, qid, rcpt, status)
        return got if len(got) >= count else None
    try:
        return h.wait_until(look, timeout, what="x")
    except AssertionError:
        seen = [d["line"] for d in delivery_lines(ng, qid)]
        raise AssertionError(
            "timed out after %ss waiting for %d log line(s) %s: to=<%s> "
            "status=%s; lines of that message:\n  %s\nlast error.log lines:"
            "\n  %s" % (timeout, count, qid, rcpt, status,
                        "\n  ".join(seen[-10:]) or "(none)",
                        "\n  ".join(ng.error_log().splitlines()[-15:])))


def _envelope(ng, qid):
    """([(key, value)], [rcpt dicts]) of qid's queue file, or None."""
    p = h.queue_file_for(ng, qid)
    if p is None:
        return None
    try:
        _, kv, rcpts, _ = h.parse_queue_file(p)
    except OSError:
        return None
    return kv, rcpts


def rcpt_states(ng, qid):
    """{address: state} from the queue file of qid; None when it is gone."""
    env = _envelope(ng, qid)
    if env is None:
        return None
    return {r.get("address", r.get("raw")): r.get("state") for r in env[1]}


def next_attempt(ng, qid):
    """(next attempt, attempts) from the queue file of qid, once it was
    tried (attempts >= 1); None before, or when it is gone."""
    env = _envelope(ng, qid)
    nxt = dict(env[0]).get("next", "").split() if env else []
    if len(nxt) != 2 or int(nxt[1]) < 1:
        return None
    return int(nxt[0]), int(nxt[1])


def queue_gone(ng, qid):
    return not h.queue_index(ng).get(qid) and not [
        p for p in h.raw_queue_files(ng) if p.name.startswith(qid)]


def wait_queue_gone(ng, qid, timeout=15):
    h.wait_until(lambda: queue_gone(ng, qid), timeout,
                 what="queue file of %s to be removed (states %r)"
                 % (qid, rcpt_states(ng, qid)))


def steady(pred, secs, what):
    """pred() stays true for secs (a quiet window, like h.quiet)."""
    deadline = time.monotonic() + secs
    while time.monotonic() < deadline:
        assert pred(), what
        time.sleep(0.1)


def read_maildir_message(path):
    data = Path(path).read_bytes()
    return data, email.message_from_bytes(data, policy=email.policy.compat32)


def dsn_messages(ng, user, domain="example.test"):
    return [read_maildir_message(p) for p in h.mailbox_files(ng, domain, user)]


def wait_dsn(ng, user, count=1, timeout=20, domain="example.test"):
    h.wait_until(lambda: len(h.mailbox_files(ng, domain, user)) >= count,
                 timeout, what="%d DSN(s) in maildir %s/%s/new; delivery log:"
                 "\n%s" % (count, domain, user, "\n".join(
                     l for l in ng.error_log().splitlines()[-12:])))
    return dsn_messages(ng, user, domain)


def dsn_parts(msg):
    """(human part, [per-message fields, per-recipient fields...],
    returned content as text) of a multipart/report."""
    assert msg.get_content_type() == "multipart/report", \
        "DSN Content-Type is %r" % msg.get("Content-Type")
    assert (msg.get_param("report-type") or "").lower() == "delivery-status",\
        "report-type is %r" % msg.get_param("report-type")
    parts = msg.get_payload()
    assert isinstance(parts, list) and len(parts) >= 2, \
        "multipart/report with %r parts" % (parts,)
    human, status, returned = parts[0], None, None
    for p in parts[1:]:
        ct = p.get_content_type()
        if ct in ("message/delivery-status", "message/global-delivery-status"):
            status = p
        elif ct in ("message/rfc822", "text/rfc822-headers",
                    "message/global", "message/global-headers"):
            returned = p
    assert status is not None, "no message/delivery-status part in %r" % (
        [p.get_content_type() for p in parts],)
    blocks = status.get_payload()
    if (status.get_content_type() == "message/global-delivery-status"
            and isinstance(blocks, list) and len(blocks) == 1):
        # Python parses an unknown message/* part as one message: the first
        # block is its header, the other blocks are its body
        inner = blocks[0]
        rest = inner.get_payload()
        blocks = [inner] + ([email.message_from_string(c)
                             for c in re.split(r"\r?\n\r?\n", rest.strip())
                             if c.strip()] if isinstance(rest, str) else [])
    if isinstance(blocks, str):
        # a parser fallback: split the fields ourselves
        chunks = re.split(r"\r?\n\r?\n", blocks.strip())
        blocks = [email.message_from_string(c) for c in chunks if c.strip()]
    ret_text = None
    if returned is not None:
        pl = returned.get_payload()
        if isinstance(pl, list):
            ret_text = "".join(m.as_string() for m in pl)
        else:
            ret_text = returned.get_payload(decode=True)
            ret_text = ret_text.decode("utf-8", "replace") \
                if isinstance(ret_text, bytes) else str(pl)
    return human, blocks, ret_text


def field(block, name):
    """A DSN field as text (compat32 gives Header objects for 8-bit ones)."""
    v = block.get(name)
    return "" if v is None else str(v)


def _fold(addr):
    """Runs of non-ASCII (or U+FFFD from 8-bit header bytes) become one
    '?', so a raw UTF-8 address still matches."""
    return re.sub(r"[^\x00-\x7f]+", "?", addr.strip().lower())


def recipient_block(blocks, rcpt):
    for b in blocks[1:]:
        fr = field(b, "Final-Recipient")
        if _fold(fr.split(";", 1)[-1]) == _fold(rcpt):
            return b
    raise AssertionError("no per-recipient block for %s in %r" % (
        rcpt, [[(k, str(v)) for k, v in b.items()] for b in blocks]))
