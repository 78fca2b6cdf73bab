"""
Address literals (RFC 5321 4.1.3): user@[192.0.2.1] and
user@[IPv6:2001:db8::1] from clients allowed to relay go straight to that
address (no DNS: the relay has no DNS server to ask here), through the
delivery engine like any hop; clients not allowed to relay get 550 5.7.1;
relay_address_literals off refuses them for everyone; a literal naming
this node (its listener's address) is refused, or with
relay_address_literal_local a local mailbox of the first local domain.
Sinks on 127.0.0.5 and ::1 (the relay listens on 127.0.0.1 only).
"""

import subprocess

import pytest

import deliveryharness as d
import relayharness as h


def literal_conf(port, extra=()):
    # a resolver nobody answers: a DNS lookup would defer, not deliver
    lines = d.conf_lines(d.alloc_port(), port, extra=list(extra))
    return d.stream_extra(lines)


@pytest.fixture(scope="module")
def world(tmp_path_factory, certs):
    port = d.alloc_port(("127.0.0.1", "127.0.0.5", "::1"))
    v4 = d.Sink("127.0.0.5", port, name="v4").start()
    v6 = d.Sink("::1", port, name="v6").start()
    ng = h.launch(tmp_path_factory, certs, "literals",
                  stream_extra=literal_conf(port))
    yield ng, v4, v6, port
    ng.stop()
    ng.assert_log_clean()
    v4.stop()
    v6.stop()


def send(ng, rcpt, port_name="main"):
    with h.SMTPConn(ng.port(port_name)) as c:
        c.ehlo("literal.client.test")
        c.expect("MAIL FROM:<p@example.org>", 250)
        r = c.cmd("RCPT TO:<%s>" % rcpt)
        if r.code != 250:
            return r
        assert c.cmd("DATA").code == 354
        r = c.send_data(h.simple_body(rcpt))
        assert r.queue_id, r
        c.cmd("QUIT")
        return r


def test_ipv4_literal_relayed_to_the_address(world):
    ng, v4, v6, _ = world
    user = h.unique("lit4")
    r = send(ng, "%s@[127.0.0.5]" % user)
    assert r.queue_id, r
    txn = v4.wait_accepted(user)[0]
    assert txn.rcpts == ["%s@[127.0.0.5]" % user]
    assert txn.peer[0] == "127.0.0.1"
    line = d.wait_status(ng, r.queue_id, "%s@[127.0.0.5]" % user, "sent")[0]
    assert "relay=127.0.0.5[127.0.0.5]:" in line["line"], line


def test_ipv6_literal_relayed_to_the_address(world):
    ng, v4, v6, _ = world
    user = h.unique("lit6")
    r = send(ng, "%s@[IPv6:::1]" % user)
    assert r.queue_id, r
    txn = v6.wait_accepted(user)[0]
    assert txn.rcpts == ["%s@[IPv6:::1]" % user]
    d.wait_status(ng, r.queue_id, "%s@[IPv6:::1]" % user, "sent")


def test_swaks_to_a_literal(world):
    ng, v4, v6, _ = world
    user = h.unique("litswaks")
    r = subprocess.run(
        ["swaks", "--server", "%s:%d" % (h.HOST, ng.port("main")),
         "--from", "p@example.org", "--to", "%s@[127.0.0.5]" % user,
         "--body", user], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stdout.decode(errors="replace")[-2000:]
    v4.wait_accepted(user)


@pytest.mark.parametrize("rcpt", ["x@[127.0.0.5]", "x@[IPv6:::1]"])
def test_literal_from_a_client_that_may_not_relay(world, rcpt):
    ng = world[0]
    r = send(ng, rcpt, "untrusted")
    assert r.is_(550, "5.7.1") and "Relay access denied" in r.text, r


def test_literal_of_this_host_refused_by_default(world):
    ng = world[0]
    r = send(ng, "x@[127.0.0.1]")
    assert r.is_(550, "5.7.1") and "address literals" in r.text, r


def test_literals_off_and_own_literal_local(fresh, certs):
    port = d.alloc_port(("127.0.0.5",))
    sink = d.Sink("127.0.0.5", port).start()
    try:
        ng = fresh(stream_extra=literal_conf(port, [
            "relay_address_literals off;",
            "relay_address_literal_local on;"]))
        r = send(ng, "x@[127.0.0.5]")
        assert r.is_(550, "5.7.1") and "not accepted" in r.text, r
        # this host's own literal: the first local domain's mailbox
        user = h.unique("ownlit")
        r = send(ng, "%s@[127.0.0.1]" % user, "untrusted")
        assert r.queue_id, r
        f = h.wait_delivered(ng, "example.test", user)[0]
        rp, dt, _, _ = h.split_delivered(f.read_bytes())
        assert dt == "%s@example.test" % user, dt
        assert not sink.all_txns()
    finally:
        sink.stop()


def test_literal_hop_keeps_the_tls_policy(fresh):
    # "tls * required": a literal is a hop like any, the sink has no
    # STARTTLS, so the recipient is deferred with 4.7.4
    port = d.alloc_port(("127.0.0.5",))
    sink = d.Sink("127.0.0.5", port).start()
    try:
        ng = fresh(stream_extra=literal_conf(port, [
            "relay_tls_policy * required;"]))
        user = h.unique("littls")
        r = send(ng, "%s@[127.0.0.5]" % user)
        line = d.wait_status(ng, r.queue_id, "%s@[127.0.0.5]" % user,
                             "deferred")[0]
        assert line["dsn"] == "4.7.4", line["line"]
        assert not sink.accepted(user)
    finally:
        sink.stop()
