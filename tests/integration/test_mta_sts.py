"""
MTA-STS (RFC 8461): relay_mta_sts on.  A CA made here signs the policy
server's certificate (mta-sts.<domain> for every domain below) and the MX
sinks'; the relay trusts it (relay_mta_sts_trusted_certificate for HTTPS,
relay_tls_trusted_certificate for the MX hosts).  The policy server is
HTTPS on 127.0.0.21:443 (the tests run as root); the test DNS
(dnsharness) serves "_mta-sts" TXT, MX and A records.  Sinks: 127.0.0.22
STARTTLS (certificate for the mx.* names), .23 without STARTTLS, .24
STARTTLS with a certificate for another name.

  enf.test       enforce, MX in policy, .22          delivered, verified
  enfplain.test  enforce, MX .23 (no STARTTLS)       queued, 4.7.4
  enfname.test   enforce, MX .24 (wrong name)        queued, 4.7.5
  enfmx.test     enforce, MX not in the policy       queued, 4.7.5
  tst.test       testing, MX .23 (no STARTTLS)       delivered, logged
  down.test      enforce: the cached policy still applies with the policy
                 server down, after a restart
"""

import http.server
import os
import threading

import pytest

import relayharness as h
import deliveryharness as dh
import dnsharness


dnsharness.require_relay()
if os.geteuid() != 0:
    pytest.skip("the policy server needs port 443", allow_module_level=True)

DOMAINS = ["enf.test", "enfplain.test", "enfname.test", "enfmx.test",
           "tst.test", "down.test"]


def policy(mode, *mx):
    return "version: STSv1\r\nmode: %s\r\n%smax_age: 86400\r\n" % (
        mode, "".join("mx: %s\r\n" % m for m in mx))


class PolicyServer:
    """HTTPS on 127.0.0.21:443: /.well-known/mta-sts.txt by Host."""

    def __init__(self, ca, policies):
        self.policies = policies
        self.fetches = []
        srv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                host = (self.headers.get("Host") or "").split(":")[0]
                srv.fetches.append((host, self.path))
                text = srv.policies.get(host[len("mta-sts."):])
                if self.path != "/.well-known/mta-sts.txt" or text is None:
                    self.send_error(404)
                    return
                body = text.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.ctx = dnsharness.server_context(ca, "web")
        self.handler = Handler
        self.httpd = None

    def start(self):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.21", 443),
                                                     self.handler)
        self.httpd.socket = self.ctx.wrap_socket(self.httpd.socket,
                                                 server_side=True)
        threading.Thread(target=self.httpd.serve_forever,
                         daemon=True).start()

    def stop(self):
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()
            self.httpd = None


class World(dnsharness.World):
    def __init__(self, d):
        super().__init__()
        self.ca = d
        dnsharness.make_ca(d, "sts test CA")
        dnsharness.make_leaf(d, "web", ["mta-sts." + x for x in DOMAINS])
        dnsharness.make_leaf(d, "mx", ["mx." + x for x in DOMAINS]
                             + ["mx2.down.test"])
        dnsharness.make_leaf(d, "wrong", ["other.test"])
        self.P = dh.alloc_port(["127.0.0.22", "127.0.0.23", "127.0.0.24"])
        self.sinks = {
            "tls": dh.Sink("127.0.0.22", self.P, "tls",
                           tls_context=dnsharness.server_context(d, "mx")),
            "plain": dh.Sink("127.0.0.23", self.P, "plain"),
            "wrong": dh.Sink("127.0.0.24", self.P, "wrong",
                             tls_context=dnsharness.server_context(
                                 d, "wrong")),
        }
        self.web = PolicyServer(d, {
            "enf.test": policy("enforce", "mx.enf.test"),
            "enfplain.test": policy("enforce", "mx.enfplain.test"),
            "enfname.test": policy("enforce", "*.enfname.test"),
            "enfmx.test": policy("enforce", "*.allowed.test"),
            "tst.test": policy("testing", "mx.tst.test"),
            "down.test": policy("enforce", "mx.down.test"),
        })
        self.servers = [self.web]
        z = self.dns = dnsharness.SecureDns(DOMAINS)
        for dom, ip in (("enf.test", "22"), ("enfplain.test", "23"),
                        ("enfname.test", "24"), ("enfmx.test", "22"),
                        ("tst.test", "23"), ("down.test", "22")):
            z.add_mx(dom, "mx." + dom, 10, "127.0.0." + ip)
            z.add_txt("_mta-sts." + dom, "v=STSv1; id=1;")
            z.add_a("mta-sts." + dom, "127.0.0.21")
        z.add_a("mx2.down.test", "127.0.0.22")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("sts-world")).start()
    yield w
    w.stop()


@pytest.fixture(scope="module")
def relay(world, tmp_path_factory, certs):
    ca = world.ca / "ca.pem"
    ng = dnsharness.launch_relay(tmp_path_factory, certs, "stsrelay", world, [
        "relay_mta_sts on;",
        "relay_mta_sts_trusted_certificate %s;" % ca,
        "relay_tls_trusted_certificate %s;" % ca])
    yield ng
    dnsharness.finish_relay(ng)


def deferred(relay, domain, dsn, why):
    """A message to domain, deferred with dsn and why in its reason."""
    m = h.unique("sts")
    rcpt = "%s@%s" % (m, domain)
    qid = dnsharness.send(relay, rcpt, m)
    line = dh.wait_status(relay, qid, rcpt, "deferred")[0]
    assert line["dsn"] == dsn, line["line"]
    assert why in line["reason"], line["line"]
    return m


def test_enforce_matching_mx_and_certificate_delivers(relay, world):
    m = h.unique("se")
    rcpt = "%s@enf.test" % m
    qid = dnsharness.send(relay, rcpt, m)
    (t,) = world.sinks["tls"].wait_accepted(m)
    assert t.tls
    line = dh.wait_status(relay, qid, rcpt, "sent")[0]
    assert "tls=verify:mta-sts" in line["line"], line["line"]
    assert ("mta-sts.enf.test", "/.well-known/mta-sts.txt") \
        in world.web.fetches


def test_enforce_without_starttls_stays_queued(relay, world):
    m = deferred(relay, "enfplain.test", "4.7.4", "tls=verify:mta-sts")
    assert not world.sinks["plain"].all_txns(m)


def test_enforce_wrong_name_stays_queued(relay, world):
    m = deferred(relay, "enfname.test", "4.7.5",
                 "does not match the host name")
    assert not world.sinks["wrong"].all_txns(m)


def test_enforce_mx_not_in_policy_stays_queued(relay, world):
    m = deferred(relay, "enfmx.test", "4.7.5", "not in the MTA-STS policy")
    assert not world.sinks["tls"].all_txns(m)
    assert "(failure 1 of the domain)" in relay.error_log()


def test_testing_mode_delivers_and_logs(relay, world):
    m = h.unique("st")
    rcpt = "%s@tst.test" % m
    qid = dnsharness.send(relay, rcpt, m)
    (t,) = world.sinks["plain"].wait_accepted(m)
    assert not t.tls
    line = dh.wait_status(relay, qid, rcpt, "sent")[0]
    assert "mta-sts-testing" in line["line"], line["line"]
    assert "MTA-STS testing for tst.test: would have failed: the server " \
        "does not offer STARTTLS" in relay.error_log()


def test_cached_policy_used_when_server_down(relay, world):
    m = h.unique("sd")
    rcpt = "%s@down.test" % m
    qid = dnsharness.send(relay, rcpt, m)
    world.sinks["tls"].wait_accepted(m)
    dh.wait_status(relay, qid, rcpt, "sent")
    cache = relay.prefix / "spool" / "mta-sts" / "down.test"
    assert cache.exists() and b"mode: enforce" in cache.read_bytes()

    # the server goes, the id changes (a fetch is tried and fails), the
    # MX moves to a host the cached policy does not name, nginx restarts
    world.web.stop()
    try:
        world.dns.set_txt("_mta-sts.down.test", "v=STSv1; id=2;")
        world.dns.records.pop(("down.test", 15))
        world.dns.add_mx("down.test", "mx2.down.test", 10)
        relay.stop()
        relay.start()
        deferred(relay, "down.test", "4.7.5", "not in the MTA-STS policy")
        assert "MTA-STS policy of down.test not fetched" in relay.error_log()
    finally:
        world.web.start()
