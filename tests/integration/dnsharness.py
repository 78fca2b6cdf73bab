"""
A small authoritative-and-"validating" DNS server for the tests, on UDP
(and TCP, for answers a client wants again after truncation): MX, A,
AAAA, TXT and TLSA records from a dict, NXDOMAIN for unknown names under
the served domains, and the AD bit on every answer (records, NODATA or
NXDOMAIN) for names in a "signed" zone, as a validating resolver would
set it (RFC 4035 3.2.3).  dnsmasq cannot serve TLSA or set AD, hence
this one.
"""

import socket
import struct
import threading

import deliveryharness as dh

TYPES = {"A": 1, "MX": 15, "TXT": 16, "AAAA": 28, "TLSA": 52}


def _name(name):
    out = b""
    for label in name.rstrip(".").split("."):
        b = label.encode("ascii")
        out += bytes([len(b)]) + b
    return out + b"\0"


class SecureDns:
    def __init__(self, domains, signed=()):
        """domains: the zones served (others are REFUSED); signed: zones
        whose answers carry AD."""
        self.domains = [d.lower().rstrip(".") for d in domains]
        self.signed = [d.lower().rstrip(".") for d in signed]
        self.records = {}          # (name, type) -> [rdata bytes]
        self.names = set()
        self.queries = []          # (name, type name or number, ad)
        self.servfail = set()      # names answered with SERVFAIL
        self.port = dh.alloc_port(("127.0.0.1",), ("127.0.0.1",))
        self._halt = threading.Event()
        self._threads = []

    # records

    def _add(self, name, qtype, rdata):
        name = name.lower().rstrip(".")
        self.records.setdefault((name, TYPES[qtype]), []).append(rdata)
        parts = name.split(".")
        for i in range(len(parts)):
            self.names.add(".".join(parts[i:]))

    def add_a(self, name, ip):
        self._add(name, "A", socket.inet_aton(ip))

    def add_mx(self, domain, host, pref=10, ip=None):
        self._add(domain, "MX", struct.pack("!H", pref) + _name(host))
        if ip:
            self.add_a(host, ip)

    def add_txt(self, name, text):
        b = text.encode()
        chunks = b"".join(bytes([len(b[i:i + 255])]) + b[i:i + 255]
                          for i in range(0, len(b), 255))
        self._add(name, "TXT", chunks)

    def set_txt(self, name, text):
        self.records.pop((name.lower().rstrip("."), 16), None)
        self.add_txt(name, text)

    def add_tlsa(self, host, usage, selector, mtype, data, port=25):
        self._add("_%d._tcp.%s" % (port, host), "TLSA",
                  bytes([usage, selector, mtype]) + data)

    def clear_tlsa(self, host, port=25):
        self.records.pop(("_%d._tcp.%s" % (port, host), 52), None)

    # serving

    def _in(self, name, zones):
        return any(name == z or name.endswith("." + z) for z in zones)

    def answer(self, data):
        name, end = dh._qname(data)
        qtype = struct.unpack("!H", data[end:end + 2])[0]
        question = data[12:end + 4]
        ad = self._in(name, self.signed)
        self.queries.append((name, qtype, ad))
        if not self._in(name, self.domains):
            rcode, answers = 5, []
        elif name in self.servfail:
            rcode, answers, ad = 2, [], False
        elif name not in self.names:
            rcode, answers = 3, []
        else:
            rcode, answers = 0, self.records.get((name, qtype), [])
        flags1 = 0x84 | (data[2] & 0x01)          # QR, AA, RD copied
        flags2 = 0x80 | (0x20 if ad else 0) | rcode
        out = data[:2] + bytes([flags1, flags2]) \
            + struct.pack("!HHHH", 1, len(answers), 0, 0) + question
        for rdata in answers:
            out += b"\xc0\x0c" + struct.pack("!HHIH", qtype, 1, 60,
                                             len(rdata)) + rdata
        return out

    def _udp(self, sock):
        while not self._halt.is_set():
            try:
                data, addr = sock.recvfrom(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                sock.sendto(self.answer(data), addr)
            except (ValueError, IndexError, struct.error, OSError):
                continue

    def _tcp(self, lsock):
        while not self._halt.is_set():
            try:
                conn, _ = lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                conn.settimeout(2)
                hdr = conn.recv(2)
                n = struct.unpack("!H", hdr)[0]
                data = b""
                while len(data) < n:
                    data += conn.recv(n - len(data))
                out = self.answer(data)
                conn.sendall(struct.pack("!H", len(out)) + out)
            except (ValueError, IndexError, struct.error, OSError):
                pass
            finally:
                conn.close()

    def start(self):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", self.port))
        u.settimeout(0.2)
        t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        t.bind(("127.0.0.1", self.port))
        t.listen(16)
        t.settimeout(0.2)
        self._socks = [u, t]
        for target, sock in ((self._udp, u), (self._tcp, t)):
            th = threading.Thread(target=target, args=(sock,), daemon=True)
            th.start()
            self._threads.append(th)
        return self

    def stop(self):
        self._halt.set()
        for th in self._threads:
            th.join(2)
        for s in self._socks:
            s.close()

    def asked(self, name, qtype=None):
        name = name.lower().rstrip(".")
        return [q for q in self.queries
                if q[0] == name and (qtype is None or q[1] == TYPES[qtype])]


# --------------------------------------------------------------------------
# a test world: this DNS (or dnsmasq), SMTP sinks, other servers, a relay


def require_relay(dnsmasq=False):
    """Skips the calling test module when the module (or dnsmasq) is
    missing."""
    import os
    import pytest
    import relayharness as h
    if not os.path.exists(h.RELAY_MODULE):
        pytest.skip("relay module not built: %s" % h.RELAY_MODULE,
                    allow_module_level=True)
    if dnsmasq and not os.path.exists(dh.DNSMASQ):
        pytest.skip("dnsmasq (dnsmasq-base) is not installed",
                    allow_module_level=True)


class World:
    """dns (start/stop), sinks by name, servers (start/stop) in between."""

    def __init__(self):
        self.dns = None
        self.sinks = {}
        self.servers = []

    def start(self):
        self.dns.start()
        for s in self.servers:
            s.start()
        for s in self.sinks.values():
            s.start()
        return self

    def stop(self):
        for s in self.sinks.values():
            s.stop()
        for s in self.servers:
            s.stop()
        self.dns.stop()


def launch_relay(tmp_path_factory, certs, name, world, extra=()):
    """A relay (one worker) resolving at the world's DNS, delivering to
    its sinks' port."""
    import relayharness as h
    prefix = h.make_prefix(tmp_path_factory.mktemp(name), certs)
    lines = dh.conf_lines(world.dns.port, world.P, extra=list(extra))
    return h.launch_at(prefix, workers=1,
                       stream_extra=dh.stream_extra(lines))


def finish_relay(ng):
    ng.stop()
    ng.assert_log_clean()
    ng.assert_no_crash()


def send(ng, rcpt, m, params="", head=""):
    """One message to rcpt through the "main" listener; its queue id."""
    import relayharness as h
    with h.SMTPConn(ng.port("main")) as c:
        return c.message("%s@example.test" % m, [rcpt],
                         ("From: <s@example.test>\r\n%sSubject: %s\r\n"
                          "\r\nbody %s\r\n" % (head, m, m)).encode(),
                         ehlo="client.test", mail_params=params)


def openssl(d, *args, stdin=None):
    import subprocess
    return subprocess.run(["openssl"] + list(args), check=True,
                          capture_output=True, cwd=str(d),
                          input=stdin).stdout


def make_ca(d, cn="test CA"):
    """d/ca.pem, d/ca.key: a CA for make_leaf()."""
    openssl(d, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=" + cn, "-keyout", "ca.key", "-out", "ca.pem",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")


def make_leaf(d, name, sans):
    """d/NAME.pem, d/NAME.key: a server certificate for the DNS names
    sans, signed by make_ca()'s CA; readable by the workers."""
    import os
    openssl(d, "req", "-newkey", "rsa:2048", "-nodes", "-subj",
            "/CN=" + sans[0], "-keyout", name + ".key", "-out",
            name + ".csr")
    (d / (name + ".cnf")).write_text(
        "subjectAltName=" + ",".join("DNS:" + s for s in sans) + "\n"
        "extendedKeyUsage=serverAuth\n")
    openssl(d, "x509", "-req", "-in", name + ".csr", "-CA", "ca.pem",
            "-CAkey", "ca.key", "-CAcreateserial", "-days", "2", "-out",
            name + ".pem", "-extfile", name + ".cnf")
    os.chmod(str(d), 0o755)
    for f in d.iterdir():
        os.chmod(str(f), 0o644)


def server_context(d, name):
    import ssl
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    c.load_cert_chain(str(d / (name + ".pem")), str(d / (name + ".key")))
    return c
