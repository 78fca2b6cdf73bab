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

import pytest

import relayharness as h
import deliveryharness as dh
import dnsharness
from dnsharness import openssl


dnsharness.require_relay()


def spki_sha256(d, cert):
    pub = openssl(d, "x509", "-in", str(cert), "-pubkey", "-noout")
    return hashlib.sha256(openssl(d, "pkey", "-pubin", "-outform", "DER",
                                  stdin=pub)).digest()


def cert_sha256(d, cert):
    return hashlib.sha256(openssl(d, "x509", "-in", str(cert), "-outform",
                                  "DER")).digest()


class World(dnsharness.World):
    def __init__(self, d, certs):
        super().__init__()
        dnsharness.make_ca(d, "dane test CA")
        dnsharness.make_leaf(d, "mx", ["mx.ta.dane.test"])
        dnsharness.make_leaf(d, "other", ["other.test"])
        (d / "chain.pem").write_bytes((d / "mx.pem").read_bytes()
                                      + (d / "ca.pem").read_bytes())
        self.P = dh.alloc_port(["127.0.0.16", "127.0.0.17", "127.0.0.18"])
        self.sinks = {
            "self": dh.Sink("127.0.0.16", self.P, "self",
                            tls_context=dh.tls_server_context(certs)),
            "ca": dh.Sink("127.0.0.17", self.P, "ca",
                          tls_context=self._chain(d)),
            "plain": dh.Sink("127.0.0.18", self.P, "plain"),
        }
        good = spki_sha256(d, certs / "cert.pem")
        other = spki_sha256(d, d / "other.pem")
        z = self.dns = dnsharness.SecureDns(["dane.test", "plain.test"],
                                            signed=["dane.test"])
        for dom, ip in (("good", "16"), ("ta", "17"), ("bad", "16"),
                        ("notls", "18"), ("unusable", "16"),
                        ("nodane", "18")):
            z.add_mx("%s.dane.test" % dom, "mx.%s.dane.test" % dom, 10,
                     "127.0.0." + ip)
        for host, usage, sel, mtype, data in (
                ("mx.good.dane.test", 3, 1, 1, good),
                ("mx.ta.dane.test", 2, 0, 1, cert_sha256(d, d / "ca.pem")),
                ("mx.bad.dane.test", 3, 1, 1, other),
                ("mx.notls.dane.test", 3, 1, 1, good),
                ("mx.unusable.dane.test", 1, 1, 1, good),
                ("mx.plain.test", 3, 1, 1, other)):
            z.add_tlsa(host, usage, sel, mtype, data, port=self.P)
        z.add_mx("plain.test", "mx.plain.test", 10, "127.0.0.18")

    @staticmethod
    def _chain(d):
        import ssl
        c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        c.load_cert_chain(str(d / "chain.pem"), str(d / "mx.key"))
        return c


@pytest.fixture(scope="module")
def world(tmp_path_factory, certs):
    w = World(tmp_path_factory.mktemp("dane-world"), certs).start()
    yield w
    w.stop()


@pytest.fixture(scope="module")
def relay(world, tmp_path_factory, certs):
    ng = dnsharness.launch_relay(tmp_path_factory, certs, "danerelay", world,
                                 ["relay_dnssec on;"])
    yield ng
    dnsharness.finish_relay(ng)


def deliver(relay, world, domain, status, sink=None):
    """A message to domain; its log line once it has status there, after
    it reached sink (when named)."""
    m = h.unique("dane")
    rcpt = "%s@%s" % (m, domain)
    qid = dnsharness.send(relay, rcpt, m)
    if sink:
        (t,) = world.sinks[sink].wait_accepted(m)
        assert bool(t.tls) == (sink != "plain"), t
    line = dh.wait_status(relay, qid, rcpt, status)[0]
    return m, qid, line


def test_dane_ee_match_delivers_over_tls(relay, world):
    _, _, line = deliver(relay, world, "good.dane.test", "sent", "self")
    assert "tls=dane:dane" in line["line"], line["line"]
    assert world.dns.asked("_%d._tcp.mx.good.dane.test" % world.P, "TLSA")


def test_dane_ta_match_delivers(relay, world):
    deliver(relay, world, "ta.dane.test", "sent", "ca")


def test_wrong_tlsa_stays_queued_4_7_5(relay, world):
    m, qid, line = deliver(relay, world, "bad.dane.test", "deferred")
    assert line["dsn"] == "4.7.5", line["line"]
    assert "does not match its TLSA records" in line["reason"], line["line"]
    assert not world.sinks["self"].all_txns(m), "sent despite the mismatch"
    # the reason is what relayctl queue list shows as the last error
    err = dict(dh._envelope(relay, qid)[0]).get("error", "")
    assert "TLSA" in err, err


def test_no_starttls_never_plaintext(relay, world):
    m, _, line = deliver(relay, world, "notls.dane.test", "deferred")
    assert line["dsn"].startswith("4.7."), line["line"]
    assert "tls=dane:dane" in line["reason"], line["line"]
    assert not world.sinks["plain"].all_txns(m), "sent in plaintext"


def test_unusable_tlsa_means_unauthenticated_tls(relay, world):
    _, _, line = deliver(relay, world, "unusable.dane.test", "sent", "self")
    assert "tls=required:dane" in line["line"], line["line"]


def test_signed_zone_without_tlsa_normal_policy(relay, world):
    _, _, line = deliver(relay, world, "nodane.dane.test", "sent", "plain")
    assert "tls=opportunistic:default" in line["line"], line["line"]


def test_unsigned_zone_falls_back_to_normal_policy(relay, world):
    deliver(relay, world, "plain.test", "sent", "plain")
    assert not world.dns.asked("_%d._tcp.mx.plain.test" % world.P,
                               "TLSA"), \
        "TLSA looked up for a host of an unsigned MX answer"


def test_ad_bit_ignored_without_relay_dnssec(world, tmp_path_factory, certs):
    ng = dnsharness.launch_relay(tmp_path_factory, certs, "danenovalidate",
                                 world, ["relay_dnssec off;"])
    try:
        _, _, line = deliver(ng, world, "bad.dane.test", "sent", "self")
        assert "tls=opportunistic:default" in line["line"], line["line"]
    finally:
        ng.stop()
