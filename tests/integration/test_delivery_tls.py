"""
Outbound delivery: per-destination TLS policy (relay_tls_policy PATTERN
required|optional [verify]; relay_tls_trusted_certificate FILE).

A CA made here with openssl signs a certificate for mx.tver.test; sinks on
127.0.0.10 (no STARTTLS), 127.0.0.11 (STARTTLS, the suite's self-signed
certificate) and 127.0.0.12 (STARTTLS, the CA-signed one).  Domains:
  treq.test        mx1 -> .10 (no TLS), mx2 -> .11 (TLS): required
  treqonly.test    mx  -> .10: required, nothing else: deferred 4.7.4
  tver.test        mx.tver.test -> .12: required verify: delivered
  tbadname.test    mx.tbadname.test -> .12: the name does not match: 4.7.5
  tuntrusted.test  mx.tuntrusted.test -> .11: not signed by the CA: 4.7.5
  topt.test        mx -> .10: no policy: plaintext as before
"""

import os
import subprocess

import pytest

import relayharness as h
import deliveryharness as dh


if not os.path.exists(h.RELAY_MODULE):
    pytest.skip("relay module not built: %s" % h.RELAY_MODULE,
                allow_module_level=True)
if not os.path.exists(dh.DNSMASQ):
    pytest.skip("dnsmasq (dnsmasq-base) is not installed",
                allow_module_level=True)
_PROBE = dh.nginx_t(["relay_delivery on;",
                     "relay_tls_policy example.org required verify;"])
if _PROBE:
    pytest.skip("relay_tls_policy not implemented: nginx -t says %s"
                % _PROBE.strip(), allow_module_level=True)


def make_ca(d):
    def run(*args):
        subprocess.run(["openssl"] + list(args), check=True,
                       capture_output=True, cwd=str(d))
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", "/CN=relay test CA", "-keyout", "ca.key", "-out", "ca.pem",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=mx.tver.test",
        "-keyout", "mx.key", "-out", "mx.csr")
    (d / "ext.cnf").write_text(
        "subjectAltName=DNS:mx.tver.test\n"
        "extendedKeyUsage=serverAuth\n")
    run("x509", "-req", "-in", "mx.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-out", "mx.pem",
        "-extfile", "ext.cnf")
    os.chmod(str(d), 0o755)
    for f in ("ca.pem", "mx.pem", "mx.key"):
        os.chmod(str(d / f), 0o644)
    return d


class World:
    def __init__(self, workdir, certs, ca):
        import ssl
        ips = ["127.0.0.%d" % i for i in (1, 10, 11, 12)]
        self.P = dh.alloc_port(ips)
        signed = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        signed.load_cert_chain(str(ca / "mx.pem"), str(ca / "mx.key"))
        self.sinks = {
            "plain": dh.Sink("127.0.0.10", self.P, "plain"),
            "selfsigned": dh.Sink("127.0.0.11", self.P, "selfsigned",
                                  tls_context=dh.tls_server_context(certs)),
            "signed": dh.Sink("127.0.0.12", self.P, "signed",
                              tls_context=signed),
        }
        z = dh.Zone()
        z.add_mx("treq.test", "mx1.treq.test", 10, "127.0.0.10")
        z.add_mx("treq.test", "mx2.treq.test", 20, "127.0.0.11")
        z.add_mx("treqonly.test", "mx.treqonly.test", 10, "127.0.0.10")
        z.add_mx("tver.test", "mx.tver.test", 10, "127.0.0.12")
        z.add_mx("tbadname.test", "mx.tbadname.test", 10, "127.0.0.12")
        z.add_mx("tuntrusted.test", "mx.tuntrusted.test", 10, "127.0.0.11")
        z.add_mx("topt.test", "mx.topt.test", 10, "127.0.0.10")
        self.dns = dh.DnsServer(workdir / "dns", z)

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
def ca(tmp_path_factory):
    return make_ca(tmp_path_factory.mktemp("tls-ca"))


@pytest.fixture(scope="module")
def world(tmp_path_factory, certs, ca):
    w = World(tmp_path_factory.mktemp("tls-world"), certs, ca).start()
    yield w
    w.stop()


@pytest.fixture(scope="module")
def relay(world, ca, tmp_path_factory, certs):
    prefix = h.make_prefix(tmp_path_factory.mktemp("tlsrelay"), certs)
    lines = dh.conf_lines(world.dns.port, world.P, extra=[
        "relay_tls_policy treq.test required;",
        "relay_tls_policy treqonly.test required;",
        "relay_tls_policy tver.test required verify;",
        "relay_tls_policy tbadname.test required verify;",
        "relay_tls_policy tuntrusted.test optional verify;",
        "relay_tls_trusted_certificate %s;" % (ca / "ca.pem"),
    ])
    ng = h.launch_at(prefix, workers=1, stream_extra=dh.stream_extra(lines))
    yield ng
    ng.stop()
    ng.assert_log_clean()
    ng.assert_no_crash()


def body_for(marker):
    return ("From: <s@example.test>\r\nTo: <r@remote.test>\r\n"
            "Subject: tls test %s\r\n\r\nbody %s\r\n" % (marker, marker)
            ).encode()


def send(ng, sender, rcpts, body):
    with h.SMTPConn(ng.port("main")) as c:
        c.ehlo("client.test")
        assert c.cmd("MAIL FROM:<%s>" % sender).code == 250
        for a in rcpts:
            assert c.cmd("RCPT TO:<%s>" % a).code == 250
        assert c.cmd("DATA").code == 354
        r = c.send_data(body)
        assert r.code == 250 and r.queue_id, r
        c.cmd("QUIT")
        return r.queue_id


def test_required_skips_host_without_starttls(relay, world):
    m = h.unique("treq")
    rcpt = "%s@treq.test" % m
    qid = send(relay, m + "@example.test", [rcpt], body_for(m))
    txn = world.sinks["selfsigned"].wait_accepted(m)[0]
    assert txn.tls, "delivered without TLS"
    assert not world.sinks["plain"].all_txns(m), \
        "MAIL sent to a host without STARTTLS"
    line = dh.wait_status(relay, qid, rcpt, "sent")[0]
    assert "127.0.0.11" in line["relay"]
    log = relay.error_log()
    assert "TLS is required for treq.test, but the server does not offer " \
        "STARTTLS" in log


def test_required_no_tls_anywhere_defers_4_7(relay, world):
    m = h.unique("treqo")
    rcpt = "%s@treqonly.test" % m
    qid = send(relay, m + "@example.test", [rcpt], body_for(m))
    line = dh.wait_status(relay, qid, rcpt, "deferred")[0]
    assert line["dsn"].startswith("4.7."), line["line"]
    assert "TLS is required" in line["reason"], line["line"]
    assert not world.sinks["plain"].all_txns(m)


def test_verify_good_certificate(relay, world):
    m = h.unique("tver")
    rcpt = "%s@tver.test" % m
    qid = send(relay, m + "@example.test", [rcpt], body_for(m))
    txn = world.sinks["signed"].wait_accepted(m)[0]
    assert txn.tls
    dh.wait_status(relay, qid, rcpt, "sent")


def test_verify_name_mismatch_defers(relay, world):
    m = h.unique("tbad")
    rcpt = "%s@tbadname.test" % m
    qid = send(relay, m + "@example.test", [rcpt], body_for(m))
    line = dh.wait_status(relay, qid, rcpt, "deferred")[0]
    assert line["dsn"] == "4.7.5", line["line"]
    assert "does not match the host name mx.tbadname.test" \
        in line["reason"], line["line"]
    assert not world.sinks["signed"].all_txns(m)


def test_verify_untrusted_chain_defers(relay, world):
    m = h.unique("tunt")
    rcpt = "%s@tuntrusted.test" % m
    qid = send(relay, m + "@example.test", [rcpt], body_for(m))
    line = dh.wait_status(relay, qid, rcpt, "deferred")[0]
    assert line["dsn"] == "4.7.5", line["line"]
    assert "not trusted" in line["reason"], line["line"]
    assert not world.sinks["selfsigned"].all_txns(m)


def test_no_policy_plaintext_still_works(relay, world):
    m = h.unique("topt")
    rcpt = "%s@topt.test" % m
    qid = send(relay, m + "@example.test", [rcpt], body_for(m))
    txn = world.sinks["plain"].wait_accepted(m)[0]
    assert not txn.tls
    dh.wait_status(relay, qid, rcpt, "sent")
