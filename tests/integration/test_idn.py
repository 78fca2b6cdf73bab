"""
Internationalized domains (RFC 5890, RFC 6531): U-labels are turned into
A-labels at MAIL and RCPT (libidn2), so DNS, routes, local domains and
limits see ASCII only.  The test DNS (dnsmasq) knows only the A-label
names:
  xn--bcher-kva.test (buecher)   MX -> 127.0.0.14, a sink with SMTPUTF8
  xn--mller-kva.test (mueller)   MX -> 127.0.0.15, a sink without SMTPUTF8
  relay_local_domain münchen.test  (xn--mnchen-3ya.test)
"""

import pytest

import relayharness as h
import deliveryharness as dh
import dnsharness


dnsharness.require_relay(dnsmasq=True)


class World(dnsharness.World):
    def __init__(self, workdir):
        super().__init__()
        self.P = dh.alloc_port(["127.0.0.14", "127.0.0.15"])
        self.utf8 = dh.Sink("127.0.0.14", self.P, "utf8",
                            ehlo_ext=dh.DEFAULT_EXT + ("SMTPUTF8",))
        self.plain = dh.Sink("127.0.0.15", self.P, "plain")
        self.sinks = {"utf8": self.utf8, "plain": self.plain}
        z = dh.Zone()
        z.add_mx("xn--bcher-kva.test", "mx.xn--bcher-kva.test", 10,
                 "127.0.0.14")
        z.add_mx("xn--mller-kva.test", "mx.xn--mller-kva.test", 10,
                 "127.0.0.15")
        self.dns = dh.DnsServer(workdir / "dns", z)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("idn-world")).start()
    yield w
    w.stop()


@pytest.fixture(scope="module")
def relay(world, tmp_path_factory, certs):
    ng = dnsharness.launch_relay(tmp_path_factory, certs, "idnrelay", world,
                                 ["relay_local_domain m\u00fcnchen.test;"])
    yield ng
    dnsharness.finish_relay(ng)


def send(relay, rcpt, m):
    return dnsharness.send(relay, rcpt, m, params=" SMTPUTF8",
                           head="To: <r@b\u00fccher.test>\r\n")


def test_u_label_resolved_as_a_label(relay, world):
    m = h.unique("idn")
    mark = world.dns.log_mark()
    qid = send(relay, "%s@b\u00fccher.test" % m, m)
    (t,) = world.utf8.wait_accepted(m)
    assert t.rcpts == ["%s@xn--bcher-kva.test" % m], t.rcpts
    assert world.dns.queried("xn--bcher-kva.test", "MX", since=mark)
    log = open(world.dns.log_path, "rb").read()
    assert "b\u00fccher".encode() not in log, "raw UTF-8 sent to the DNS"
    dh.wait_status(relay, qid, "%s@xn--bcher-kva.test" % m, "sent")


@pytest.mark.parametrize("domain", ["\u2603.test", "b\u00fc--x.test"])
def test_invalid_label_refused_at_rcpt(relay, world, domain):
    mark = world.dns.log_mark()
    with h.SMTPConn(relay.port("main")) as c:
        c.ehlo("client.test")
        c.expect("MAIL FROM:<a@example.test> SMTPUTF8", 250)
        r = c.cmd("RCPT TO:<u@%s>" % domain)
        assert r.code == 553 and r.enh == "5.1.3", r
        assert "invalid internationalized domain name" in r.text
    assert not [l for l in open(world.dns.log_path, "rb").read()[mark:]
                .splitlines() if b"query[" in l and b"\xe2\x98\x83" in l]


def test_invalid_sender_domain_refused_at_mail(relay):
    with h.SMTPConn(relay.port("main")) as c:
        c.ehlo("client.test")
        r = c.cmd("MAIL FROM:<a@\u2603.test> SMTPUTF8")
        assert r.code == 501 and r.enh == "5.1.7", r


def test_local_domain_in_u_labels(relay):
    send(relay, "anna@M\u00dcNCHEN.test", h.unique("idl"))
    h.wait_delivered(relay, "xn--mnchen-3ya.test", "anna")


def test_utf8_local_part_to_server_without_smtputf8_bounces(relay, world):
    m = h.unique("idb")
    qid = send(relay, "j\u00f6rg-%s@m\u00fcller.test" % m, m)
    line = dh.wait_status(relay, qid,
                          "j\u00f6rg-%s@xn--mller-kva.test" % m,
                          "bounced")[-1]
    assert line["dsn"] == "5.6.7", line["line"]
    assert not world.plain.accepted(m)
