"""
DANE for SMTP (RFC 7672) with relay_dnssec on: the tests' own DNS server
(dnsharness.SecureDns) signs dane.test (sets AD) and serves TLSA records;
plain.test is not signed.  Sinks: 127.0.0.16 STARTTLS with the suite's
self-signed certificate, 127.0.0.17 STARTTLS with a certificate of a CA
made here (chain sent), 127.0.0.18 without STARTTLS.

TLSA records are at _PORT._tcp.HOST, PORT the sinks' port (relay_smtp_port).

  good.dane.test      TLSA 3 1 1 of .16's key          delivered over TLS
  ta.dane.test        TLSA 2 0 1 of the CA (.17)       delivered over TLS
  bad.dane.test       TLSA 3 1 1 of another key (.16)  queued, 4.7.5
  notls.dane.test     TLSA 3 1 1, host without TLS     queued, 4.7.4
  unusable.dane.test  TLSA 1 1 1 only (PKIX-EE)        TLS, unauthenticated
  nodane.dane.test    signed, no TLSA (.18)            normal policy: plain
  plain.test          unsigned zone, TLSA present (.18) normal policy: plain
"""

import hashlib
import os
import ssl
import subprocess

import pytest

import relayharness as h
import deliveryharness as dh
import dnsharness


if not os.path.exists(h.RELAY_MODULE):
    pytest.skip("relay module not built: %s" % h.RELAY_MODULE,
                allow_module_level=True)


def openssl(d, *args, stdin=None):
    return subprocess.run(["openssl"] + list(args), check=True,
                          capture_output=True, cwd=str(d),
                          input=stdin).stdout


def spki_sha256(d, cert):
    pub = openssl(d, "x509", "-in", str(cert), "-pubkey", "-noout")
    der = openssl(d, "pkey", "-pubin", "-outform", "DER", stdin=pub)
    return hashlib.sha256(der).digest()


def cert_sha256(d, cert):
    return hashlib.sha256(openssl(d, "x509", "-in", str(cert), "-outform",
                                  "DER")).digest()


def make_ca(d):
    openssl(d, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=dane test CA", "-keyout", "ca.key", "-out",
            "ca.pem", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl(d, "req", "-newkey", "rsa:2048", "-nodes", "-subj",
            "/CN=mx.ta.dane.test", "-keyout", "mx.key", "-out", "mx.csr")
    (d / "ext.cnf").write_text("subjectAltName=DNS:mx.ta.dane.test\n"
                               "extendedKeyUsage=serverAuth\n")
    openssl(d, "x509", "-req", "-in", "mx.csr", "-CA", "ca.pem", "-CAkey",
            "ca.key", "-CAcreateserial", "-days", "2", "-out", "mx.pem",
            "-extfile", "ext.cnf")
    (d / "chain.pem").write_bytes((d / "mx.pem").read_bytes()
                                  + (d / "ca.pem").read_bytes())
    openssl(d, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            "-subj", "/CN=other", "-keyout", "other.key", "-out",
            "other.pem")
    return d


class World:
    def __init__(self, workdir, certs):
        ca = make_ca(workdir)
        self.P = dh.alloc_port(["127.0.0.16", "127.0.0.17", "127.0.0.18"])
        chain = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        chain.load_cert_chain(str(ca / "chain.pem"), str(ca / "mx.key"))
        self.sinks = {
            "self": dh.Sink("127.0.0.16", self.P, "self",
                            tls_context=dh.tls_server_context(certs)),
            "ca": dh.Sink("127.0.0.17", self.P, "ca", tls_context=chain),
            "plain": dh.Sink("127.0.0.18", self.P, "plain"),
        }
        good = spki_sha256(workdir, certs / "cert.pem")
        other = spki_sha256(workdir, ca / "other.pem")
        z = self.dns = dnsharness.SecureDns(["dane.test", "plain.test"],
                                            signed=["dane.test"])
        for dom, ip in (("good", "16"), ("ta", "17"), ("bad", "16"),
                        ("notls", "18"), ("unusable", "16"),
                        ("nodane", "18")):
            z.add_mx("%s.dane.test" % dom, "mx.%s.dane.test" % dom, 10,
                     "127.0.0." + ip)
        z.add_tlsa("mx.good.dane.test", 3, 1, 1, good, port=self.P)
        z.add_tlsa("mx.ta.dane.test", 2, 0, 1,
                   cert_sha256(workdir, ca / "ca.pem"), port=self.P)
        z.add_tlsa("mx.bad.dane.test", 3, 1, 1, other, port=self.P)
        z.add_tlsa("mx.notls.dane.test", 3, 1, 1, good, port=self.P)
        z.add_tlsa("mx.unusable.dane.test", 1, 1, 1, good, port=self.P)
        z.add_mx("plain.test", "mx.plain.test", 10, "127.0.0.18")
        z.add_tlsa("mx.plain.test", 3, 1, 1, other, port=self.P)

    def start(self):
        self.dns.start()
        for s in self.sinks.values():
            s.start()
        return self

    def stop(self):
        for s in self.sinks.values():
            s.stop()
        self.dns.stop()


@pytest.fixture(scope="module")
def world(tmp_path_factory, certs):
    w = World(tmp_path_factory.mktemp("dane-world"), certs).start()
    yield w
    w.stop()


def launch(world, tmp_path_factory, certs, name, dnssec):
    prefix = h.make_prefix(tmp_path_factory.mktemp(name), certs)
    lines = dh.conf_lines(world.dns.port, world.P,
                          extra=["relay_dnssec %s;" % dnssec])
    return h.launch_at(prefix, workers=1,
                       stream_extra=dh.stream_extra(lines))


@pytest.fixture(scope="module")
def relay(world, tmp_path_factory, certs):
    ng = launch(world, tmp_path_factory, certs, "danerelay", "on")
    yield ng
    ng.stop()
    ng.assert_log_clean()
    ng.assert_no_crash()


def send(ng, rcpt, m):
    with h.SMTPConn(ng.port("main")) as c:
        return c.message("%s@example.test" % m, [rcpt],
                         ("From: <s@example.test>\r\nSubject: dane %s\r\n"
                          "\r\nbody %s\r\n" % (m, m)).encode(),
                         ehlo="client.test")


def test_dane_ee_match_delivers_over_tls(relay, world):
    m = h.unique("dee")
    rcpt = "%s@good.dane.test" % m
    qid = send(relay, rcpt, m)
    (t,) = world.sinks["self"].wait_accepted(m)
    assert t.tls
    line = dh.wait_status(relay, qid, rcpt, "sent")[0]
    assert "tls=dane:dane" in line["line"], line["line"]
    assert world.dns.asked("_%d._tcp.mx.good.dane.test" % world.P, "TLSA")


def test_dane_ta_match_delivers(relay, world):
    m = h.unique("dta")
    rcpt = "%s@ta.dane.test" % m
    qid = send(relay, rcpt, m)
    (t,) = world.sinks["ca"].wait_accepted(m)
    assert t.tls
    dh.wait_status(relay, qid, rcpt, "sent")


def test_wrong_tlsa_stays_queued_4_7_5(relay, world):
    m = h.unique("dbad")
    rcpt = "%s@bad.dane.test" % m
    qid = send(relay, rcpt, m)
    line = dh.wait_status(relay, qid, rcpt, "deferred")[0]
    assert line["dsn"] == "4.7.5", line["line"]
    assert "does not match its TLSA records" in line["reason"], line["line"]
    assert not world.sinks["self"].all_txns(m), "sent despite the mismatch"
    assert not dh.queue_gone(relay, qid)
    # the reason is what relayctl queue list shows as the last error
    err = dict(dh._envelope(relay, qid)[0]).get("error", "")
    assert "TLSA" in err, err


def test_no_starttls_never_plaintext(relay, world):
    m = h.unique("dnot")
    rcpt = "%s@notls.dane.test" % m
    qid = send(relay, rcpt, m)
    line = dh.wait_status(relay, qid, rcpt, "deferred")[0]
    assert line["dsn"].startswith("4.7."), line["line"]
    assert "tls=required:dane" in line["reason"] or \
        "tls=dane:dane" in line["reason"], line["line"]
    assert not world.sinks["plain"].all_txns(m), "sent in plaintext"


def test_unusable_tlsa_means_unauthenticated_tls(relay, world):
    m = h.unique("dunu")
    rcpt = "%s@unusable.dane.test" % m
    qid = send(relay, rcpt, m)
    (t,) = world.sinks["self"].wait_accepted(m)
    assert t.tls
    line = dh.wait_status(relay, qid, rcpt, "sent")[0]
    assert "tls=required:dane" in line["line"], line["line"]


def test_signed_zone_without_tlsa_normal_policy(relay, world):
    m = h.unique("dnod")
    rcpt = "%s@nodane.dane.test" % m
    qid = send(relay, rcpt, m)
    (t,) = world.sinks["plain"].wait_accepted(m)
    assert not t.tls
    line = dh.wait_status(relay, qid, rcpt, "sent")[0]
    assert "tls=opportunistic:default" in line["line"], line["line"]


def test_unsigned_zone_falls_back_to_normal_policy(relay, world):
    m = h.unique("dpl")
    rcpt = "%s@plain.test" % m
    qid = send(relay, rcpt, m)
    (t,) = world.sinks["plain"].wait_accepted(m)
    assert not t.tls
    dh.wait_status(relay, qid, rcpt, "sent")
    assert not world.dns.asked("_%d._tcp.mx.plain.test" % world.P,
                               "TLSA"), \
        "TLSA looked up for a host of an unsigned MX answer"


def test_ad_bit_ignored_without_relay_dnssec(world, tmp_path_factory, certs):
    ng = launch(world, tmp_path_factory, certs, "danenovalidate", "off")
    try:
        m = h.unique("doff")
        rcpt = "%s@bad.dane.test" % m
        qid = send(ng, rcpt, m)
        world.sinks["self"].wait_accepted(m)
        line = dh.wait_status(ng, qid, rcpt, "sent")[0]
        assert "tls=opportunistic:default" in line["line"], line["line"]
    finally:
        ng.stop()
