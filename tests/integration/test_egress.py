"""
Egress IP pools (relay_egress_pool, relay_egress_rule) and per-destination
limits (relay_destination_limit): the sink sees each message from the
pool's address with the pool's EHLO name; rules by sender domain,
authenticated user and tenant; weighted choice; an address that cannot be
bound is skipped; retries keep the pool; the fleet policy adds pools and
rules without a reload.

Sinks and egress addresses live on 127.0.0.40-49 (the delivery tests use
127.0.0.2-30).
"""

import collections
import threading
import time

import pytest

import relayharness as h
import deliveryharness as dh


SINK_IP = "127.0.0.40"


@pytest.fixture(scope="module")
def sink():
    port = dh.alloc_port((SINK_IP,))
    tries = collections.Counter()
    lock = threading.Lock()

    def rcpt(sess, txn, addr):
        # "retry*" recipients get one 451, then 250
        if addr.startswith("retry"):
            with lock:
                tries[addr] += 1
                if tries[addr] == 1:
                    return "451 4.3.0 <%s>: try again" % addr
        return None

    s = dh.Sink(SINK_IP, port, "egress-sink", rcpt_reply=rcpt)
    s.start()
    yield s
    s.stop()


def egress_conf(sink, extra=()):
    lines = [
        "relay_delivery on;",
        "relay_resolver 127.0.0.1:1;",
        "relay_queue_scan_interval 1s;",
        "relay_retry_backoff 1s 2s;",
        "relay_connection_reuse off;",
        "relay_route egress.test [%s]:%d;" % (SINK_IP, sink.port),
        "relay_egress_pool bulk ehlo=bulk.example.net 127.0.0.41 weight=9 "
        "127.0.0.42;",
        "relay_egress_pool tx ehlo=tx.example.net 127.0.0.43;",
        "relay_egress_pool halfbroken ehlo=hb.example.net 192.0.2.7 "
        "weight=1000 127.0.0.44;",
        "relay_egress_pool broken ehlo=broken.example.net 192.0.2.7;",
        "relay_egress_rule sender_domain .bulk.example bulk;",
        "relay_egress_rule auth_user alice@example.test tx;",
        "relay_egress_rule sender_domain halfbroken.example halfbroken;",
        "relay_egress_rule sender_domain broken.example broken;",
        "relay_egress_rule tenant acme tx;",
    ] + list(extra)
    return "\n".join("    " + l for l in lines)


@pytest.fixture(scope="module")
def erelay(tmp_path_factory, certs, sink):
    ng = h.launch(tmp_path_factory, certs, "egress", workers=2,
                  stream_extra=egress_conf(sink))
    yield ng
    ng.stop()
    ng.assert_log_clean()
    ng.assert_no_crash()


def send(ng, sender, rcpts, tag, port="main", auth=None):
    c = h.SMTPConn(ng.port(port))
    c.ehlo()
    if auth:
        c.starttls()
        c.ehlo()
        c.expect("AUTH PLAIN " + h.auth_plain_token(*auth), 235)
    qid = c.message(sender, rcpts, h.simple_body(tag))
    c.close()
    return qid


def test_sender_domain_rule_uses_the_pool_address_and_ehlo(erelay, sink):
    tag = h.unique("eg")
    send(erelay, "news@list.bulk.example", ["%s@egress.test" % tag], tag)
    t = sink.wait_accepted(tag)[0]
    assert t.peer[0] in ("127.0.0.41", "127.0.0.42"), t.peer
    assert t.helo == "bulk.example.net", t.helo


def test_weighted_choice_inside_the_pool(erelay, sink):
    tags = [h.unique("w") + "x" for _ in range(40)]
    qids = {}
    for tag in tags:
        qids[tag] = send(erelay, "n@bulk.example", ["%s@egress.test" % tag],
                         tag)
    seen = collections.Counter()
    for tag in tags:
        seen[sink.wait_accepted(tag)[0].peer[0]] += 1
    # what the relay says it used, for the record when this fails
    log = erelay.error_log()
    used = collections.Counter(
        l.split(" from ")[1].split(" ")[0] for l in log.splitlines()
        if " from 127.0.0.4" in l and any(q + ":" in l for q in qids.values()))
    assert set(seen) <= {"127.0.0.41", "127.0.0.42"}, (seen, used)
    # weight 9 against 1: expected 36 to 4
    assert seen["127.0.0.41"] >= 2 * seen["127.0.0.42"], (seen, used)


def test_auth_user_rule(erelay, sink):
    tag = h.unique("au")
    send(erelay, "alice@example.test", ["%s@egress.test" % tag], tag,
         port="sub", auth=("alice@example.test", "alice-secret"))
    t = sink.wait_accepted(tag)[0]
    assert t.peer[0] == "127.0.0.43", t.peer
    assert t.helo == "tx.example.net", t.helo


def test_no_rule_means_no_pool(erelay, sink):
    tag = h.unique("np")
    send(erelay, "someone@elsewhere.example", ["%s@egress.test" % tag], tag)
    t = sink.wait_accepted(tag)[0]
    assert t.peer[0] == "127.0.0.1", t.peer
    assert t.helo == "relay.test", t.helo


def test_unbindable_address_is_skipped(erelay, sink):
    tags = [h.unique("hb") for _ in range(3)]
    for tag in tags:
        send(erelay, "x@halfbroken.example", ["%s@egress.test" % tag], tag)
    for tag in tags:
        t = sink.wait_accepted(tag)[0]
        assert t.peer[0] == "127.0.0.44", t.peer
        assert t.helo == "hb.example.net", t.helo
    log = erelay.error_log()
    assert "egress address 192.0.2.7 of pool \"halfbroken\" cannot be used" \
        in log


def test_no_usable_address_defers(erelay, sink):
    tag = h.unique("br")
    qid = send(erelay, "x@broken.example", ["%s@egress.test" % tag], tag)
    h.wait_until(lambda: "%s: to=<%s@egress.test>" % (qid, tag)
                 in erelay.error_log(), what="the attempt's log line")
    line = [l for l in erelay.error_log().splitlines()
            if "%s: to=<%s@egress.test>" % (qid, tag) in l][0]
    assert "status=deferred" in line and "dsn=4.4.0" in line, line
    assert 'no source address of egress pool "broken" can be used' in line
    assert sink.all_txns(tag) == []


def test_a_broken_pool_does_not_suspend_the_destination(tmp_path_factory,
                                                       certs, sink):
    """A pool of ours with no usable address defers its own mail; the
    destination's hosts were never tried, so mail for it through other
    pools goes on (not held back as for an unreachable destination).  One
    worker: both messages meet in the same schedule."""
    ng = h.launch(tmp_path_factory, certs, "egress-broken", workers=1,
                  stream_extra=egress_conf(sink, []))
    try:
        tag = h.unique("bp")
        qid = send(ng, "x@broken.example", ["%s@egress.test" % tag], tag)
        h.wait_until(lambda: "%s: to=<%s@egress.test>" % (qid, tag)
                     in ng.error_log(), what="the broken pool's deferral")
        tag2 = h.unique("bp")
        qid2 = send(ng, "n@bulk.example", ["%s@egress.test" % tag2], tag2)
        t = sink.wait_accepted(tag2, timeout=10)[0]
        assert t.peer[0] in ("127.0.0.41", "127.0.0.42"), t.peer
        lines = [l for l in ng.error_log().splitlines() if qid2 in l]
        assert not [l for l in lines if "suspended" in l], lines
    finally:
        ng.stop()


def test_retry_keeps_the_pool(erelay, sink):
    tag = h.unique("rt")
    rcpt = "retry-%s@egress.test" % tag
    send(erelay, "n@bulk.example", [rcpt], tag)
    t = sink.wait_accepted(tag, timeout=20)[0]
    attempts = sink.all_txns(tag)
    assert len(attempts) >= 2, attempts
    for a in attempts:
        assert a.peer[0] in ("127.0.0.41", "127.0.0.42"), a.peer
        assert a.helo == "bulk.example.net", a.helo
    assert t.rcpts == [rcpt]


def test_tenant_rule(tmp_path_factory, certs, sink):
    ng = h.launch(tmp_path_factory, certs, "egress-tenant", workers=1,
                  stream_extra=egress_conf(sink, ["relay_tenant acme;"]))
    try:
        tag = h.unique("tn")
        send(ng, "someone@elsewhere.example", ["%s@egress.test" % tag], tag)
        t = sink.wait_accepted(tag)[0]
        assert t.peer[0] == "127.0.0.43", t.peer
        assert t.helo == "tx.example.net", t.helo
        # the tenant is kept in the queue file for retries
    finally:
        ng.stop()
    ng.assert_log_clean()


def test_unknown_pool_in_a_rule_is_a_configuration_error():
    err = dh.nginx_t(["relay_egress_rule sender_domain x.example nosuch;"])
    assert err and ('relay_egress_rule: egress_rules[0].pool: no egress pool '
                    '"nosuch"') in err, err


# --------------------------------------------------------------------------
# pools, rules and destination limits from the fleet policy, live


def test_fleet_policy_pool_and_rule_without_reload(tmp_path_factory, certs,
                                                   sink):
    import controlharness as ch
    work = tmp_path_factory.mktemp("egress-fleet")
    ch.load_stubs(work / "gen")
    pki = ch.make_certs(work / "pki", "egress")
    ctld = ch.Controld(work / "ctld", pki).start()
    extra = [
        "relay_control 127.0.0.1:%d node=egress;" % ctld.port,
        "relay_control_certificate %s/node-egress.pem;" % pki,
        "relay_control_certificate_key %s/node-egress.key;" % pki,
        "relay_control_trusted_certificate %s/ca.pem;" % pki,
    ]
    ng = h.launch(tmp_path_factory, certs, "egress-fleet-node", workers=2,
                  stream_extra=egress_conf(sink, extra))
    try:
        master = ng.master_pid
        p = ch.pb.Policy(comment="fleet egress")
        pool = p.egress_pools.add(name="fleet", ehlo_name="fleet.example.net")
        pool.addresses.add(address="127.0.0.48", weight=1)
        # the fleet's rule comes before nginx.conf's .bulk.example rule
        p.egress_rules.add(key=ch.pb.EgressRule.SENDER_DOMAIN,
                           match="bulk.example", pool="fleet")
        chan, admin = ctld.admin()
        with chan:
            v = admin.Apply(ch.pb.ApplyRequest(policy=p)).version
        h.wait_until(lambda: ng.error_log().count(
            "relay policy version %d in use" % v) >= 2, timeout=10,
            what="both workers on the policy")

        tag = h.unique("fe")
        send(ng, "n@bulk.example", ["%s@egress.test" % tag], tag)
        t = sink.wait_accepted(tag)[0]
        assert t.peer[0] == "127.0.0.48", t.peer
        assert t.helo == "fleet.example.net", t.helo

        # nginx.conf's rules still apply where the fleet has none
        tag = h.unique("fe")
        send(ng, "n@x.bulk.example", ["%s@egress.test" % tag], tag)
        t = sink.wait_accepted(tag)[0]
        assert t.peer[0] in ("127.0.0.41", "127.0.0.42"), t.peer

        # the fleet's TLS policy: this sink offers no STARTTLS
        p.tls.add(pattern="egress.test", required=True)
        with ctld.admin()[0] as chan:
            admin = ch.pb_grpc.AdminStub(chan)
            v = admin.Apply(ch.pb.ApplyRequest(policy=p)).version
        h.wait_until(lambda: ng.error_log().count(
            "relay policy version %d in use" % v) >= 2, timeout=10,
            what="both workers on the policy")
        tag = h.unique("ft")
        qid = send(ng, "n@bulk.example", ["%s@egress.test" % tag], tag)
        h.wait_until(lambda: "%s: to=<%s@egress.test>" % (qid, tag)
                     in ng.error_log(), what="the attempt's log line")
        line = [l for l in ng.error_log().splitlines()
                if "%s: to=<%s@egress.test>" % (qid, tag) in l][0]
        assert "status=deferred" in line and "dsn=4.7." in line, line
        assert sink.all_txns(tag) == []
        assert ng.master_pid == master
    finally:
        ng.stop()
        ctld.stop()
    ng.assert_log_clean()
