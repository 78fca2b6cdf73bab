"""
Outbound delivery, the connection side: PIPELINING of the envelope,
recipients per transaction (relay_max_rcpts_per_transaction, 452 4.5.3),
connection reuse (relay_connection_reuse, _reuse_limit, _idle_timeout, a
cached connection found dead), relay_destination_concurrency, and a 4xx to
RCPT at the primary MX moving that recipient to the next MX.

A module-scoped world: a dnsmasq and SMTP sinks on 127.0.0.2-9 (one port P
for all, relay_smtp_port), each for one domain.  Every test starts its own
nginx with one worker (the connection cache and the concurrency limit are
per worker), so counts of connections at a sink are exact.  Ports come
from deliveryharness (23000-23999) and relayharness (22000-22999).
"""

import email.utils
import os
import threading
import time

import pytest

import relayharness as h
import deliveryharness as dh


if not os.path.exists(h.RELAY_MODULE):
    pytest.skip("relay module not built: %s" % h.RELAY_MODULE,
                allow_module_level=True)
if not os.path.exists(dh.DNSMASQ):
    pytest.skip("dnsmasq (dnsmasq-base) is not installed",
                allow_module_level=True)
_PROBE = dh.nginx_t(["relay_delivery on;", "relay_connection_reuse on;"])
if _PROBE:
    pytest.skip("connection reuse not implemented: nginx -t says %s"
                % _PROBE.strip(), allow_module_level=True)


def too_many_after(n):
    """RCPT hook: 452 4.5.3 once n recipients of a transaction were
    accepted (Postfix's smtpd_recipient_limit behaviour)."""
    def rcpt(sess, txn, addr):
        if len(txn.rcpts) >= n:
            return "452 4.5.3 Error: too many recipients"
        return None
    return rcpt


def mail_421_on_second(sess, txn, sender):
    """A server that dropped the idle connection: 421 to the second MAIL
    of a session."""
    if len(sess.txns) >= 1:
        return "421 4.4.2 sink-dead: idle for too long, closing"
    return None


def slow_dot(sess, txn, _):
    time.sleep(0.3)
    return None


def always_451(sess, txn, addr):
    return "451 4.3.0 <%s>: sink-defer is having a bad day" % addr


def soft_rcpt(sess, txn, addr):
    if addr.lower().startswith("soft"):
        return "451 4.2.0 <%s>: greylisted at mx1" % addr
    return None


class World:
    PLAN = {
        # name: (ip, Sink keywords)
        "pipe": ("127.0.0.2", {}),
        "reuse": ("127.0.0.3", {}),
        "limit": ("127.0.0.4", {"rcpt_reply": too_many_after(2)}),
        "dead": ("127.0.0.5", {"mail_reply": mail_421_on_second}),
        "conc": ("127.0.0.6", {"dot_reply": slow_dot}),
        "soft1": ("127.0.0.7", {"rcpt_reply": soft_rcpt}),
        "soft2": ("127.0.0.8", {}),
        "idle": ("127.0.0.9", {}),
        "defer": ("127.0.0.10", {"rcpt_reply": always_451}),
    }

    def __init__(self, workdir):
        ips = ["127.0.0.%d" % i for i in range(1, 11)]
        self.P = dh.alloc_port(ips)
        self.sinks = {n: dh.Sink(ip, self.P, n, **kw)
                      for n, (ip, kw) in self.PLAN.items()}
        z = dh.Zone()
        for n in ("pipe", "reuse", "limit", "dead", "conc", "idle", "defer"):
            z.add_mx("%s.test" % n, "mx.%s.test" % n, 10, self.PLAN[n][0])
        z.add_mx("soft.test", "mx1.soft.test", 10, "127.0.0.7")
        z.add_mx("soft.test", "mx2.soft.test", 20, "127.0.0.8")
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
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("conn-world")).start()
    yield w
    w.stop()


@pytest.fixture
def relay(world, request, tmp_path_factory, certs):
    started = []

    def launch(*extra, workers=1):
        prefix = h.make_prefix(
            tmp_path_factory.mktemp(request.node.name[:40]), certs)
        lines = dh.conf_lines(world.dns.port, world.P, extra=extra)
        ng = h.launch_at(prefix, workers=workers,
                         stream_extra=dh.stream_extra(lines))
        started.append(ng)
        return ng

    yield launch
    for ng in started:
        ng.stop()
        ng.assert_log_clean()
        ng.assert_no_crash()


def body_for(marker):
    return ("From: <s@example.test>\r\nTo: <r@remote.test>\r\n"
            "Subject: conn test %s\r\n\r\nbody %s\r\n.dot\r\n"
            % (marker, marker)).encode()


def send(ng, sender, rcpts, body):
    with h.SMTPConn(ng.port("main")) as c:
        c.ehlo("client.test")
        assert c.cmd("MAIL FROM:<%s>" % sender).code == 250
        for a in rcpts:
            r = c.cmd("RCPT TO:<%s>" % a)
            assert r.code == 250, "RCPT %s -> %r" % (a, r)
        assert c.cmd("DATA").code == 354
        r = c.send_data(body)
        assert r.code == 250 and r.queue_id, r
        c.cmd("QUIT")
        return r.queue_id


def sessions_with(sink, marker):
    return [s for s in list(sink.sessions)
            if any(marker in (t.sender or "") for t in s.txns)]


# --------------------------------------------------------------------------


def test_directives_accepted():
    for line in ("relay_connection_reuse off;",
                 "relay_connection_reuse_limit 7;",
                 "relay_connection_idle_timeout 2s;",
                 "relay_destination_concurrency 3;",
                 "relay_max_rcpts_per_transaction 10;"):
        assert dh.nginx_t(["relay_delivery on;", line]) is None, line
    for line in ("relay_destination_concurrency 0;",
                 "relay_max_rcpts_per_transaction 0;",
                 "relay_connection_reuse_limit 0;"):
        assert dh.nginx_t(["relay_delivery on;", line]) is not None, line


def test_pipelined_envelope(relay, world):
    ng = relay()
    m = h.unique("pipe")
    rcpts = ["%s-%d@pipe.test" % (m, i) for i in range(3)]
    qid = send(ng, m + "@example.test", rcpts, body_for(m))
    sink = world.sinks["pipe"]
    txn = sink.wait_accepted(m)[0]
    assert txn.rcpts == rcpts
    sess = txn.session
    # MAIL, the RCPTs and DATA came in one write: when the sink read each
    # of them but DATA, the next was already there
    env = [(v, more) for v, more in sess.batched
           if v in ("MAIL", "RCPT", "DATA")]
    assert [v for v, _ in env] == ["MAIL", "RCPT", "RCPT", "RCPT", "DATA"], \
        sess.batched
    assert all(more for _, more in env[:-1]), \
        "envelope not pipelined: %r" % sess.batched
    for r in rcpts:
        dh.wait_status(ng, qid, r, "sent")


def test_rcpts_per_transaction_limit(relay, world):
    ng = relay("relay_max_rcpts_per_transaction 2;")
    m = h.unique("lim")
    rcpts = ["%s-%d@reuse.test" % (m, i) for i in range(5)]
    qid = send(ng, m + "@example.test", rcpts, body_for(m))
    sink = world.sinks["reuse"]
    sink.wait_accepted(m, count=3)
    txns = sink.accepted(m)
    assert [len(t.rcpts) for t in txns] == [2, 2, 1], txns
    assert sorted(r for t in txns for r in t.rcpts) == sorted(rcpts)
    assert len({id(t.session) for t in txns}) == 1, \
        "transactions of one message over several connections"
    for r in rcpts:
        dh.wait_status(ng, qid, r, "sent")
    dh.wait_queue_gone(ng, qid)


def test_452_too_many_recipients_next_transaction(relay, world):
    ng = relay()
    m = h.unique("tmr")
    rcpts = ["%s-%d@limit.test" % (m, i) for i in range(5)]
    qid = send(ng, m + "@example.test", rcpts, body_for(m))
    sink = world.sinks["limit"]
    sink.wait_accepted(m, count=3)
    txns = sink.accepted(m)
    assert [len(t.rcpts) for t in txns] == [2, 2, 1], txns
    assert len({id(t.session) for t in txns}) == 1
    for r in rcpts:
        dh.wait_status(ng, qid, r, "sent")
    assert not dh.delivery_lines(ng, qid, status="deferred"), \
        "452 4.5.3 deferred recipients instead of a next transaction"
    dh.wait_queue_gone(ng, qid)


def test_connection_reuse(relay, world):
    ng = relay()
    sink = world.sinks["reuse"]
    m = h.unique("reu")
    qids = []
    for i in range(5):
        qids.append(send(ng, "%s-%d@example.test" % (m, i),
                         ["%s-%d@reuse.test" % (m, i)], body_for(m)))
        sink.wait_accepted("%s-%d@" % (m, i))
    sess = sessions_with(sink, m)
    assert len(sess) == 1, "5 messages over %d connections" % len(sess)
    assert len(sess[0].txns) == 5
    assert [c for c in sess[0].commands if c.upper().startswith("RSET")] \
        == [], "RSET after complete transactions"
    assert sess[0].helos == ["relay.test"], "EHLO again on a cached one"
    lines = [dh.wait_status(ng, q, "%s-%d@reuse.test" % (m, i), "sent")[0]
             for i, q in enumerate(qids)]
    assert "conn=reused" not in lines[0]["line"]
    assert all("conn=reused" in l["line"] for l in lines[1:]), \
        [l["line"] for l in lines]


def test_connection_reuse_limit(relay, world):
    ng = relay("relay_connection_reuse_limit 2;")
    sink = world.sinks["reuse"]
    m = h.unique("rlim")
    for i in range(5):
        send(ng, "%s-%d@example.test" % (m, i),
             ["%s-%d@reuse.test" % (m, i)], body_for(m))
        sink.wait_accepted("%s-%d@" % (m, i))
    h.wait_until(lambda: all(s.closed_by_peer or "QUIT" in s.commands
                             for s in sessions_with(sink, m)[:2]), 10,
                 what="full connections closed")
    sess = sessions_with(sink, m)
    assert [len(s.txns) for s in sess] == [2, 2, 1], \
        [len(s.txns) for s in sess]


def test_connection_reuse_off(relay, world):
    ng = relay("relay_connection_reuse off;")
    sink = world.sinks["reuse"]
    m = h.unique("roff")
    for i in range(3):
        send(ng, "%s-%d@example.test" % (m, i),
             ["%s-%d@reuse.test" % (m, i)], body_for(m))
        sink.wait_accepted("%s-%d@" % (m, i))
    sess = sessions_with(sink, m)
    assert [len(s.txns) for s in sess] == [1, 1, 1]
    h.wait_until(lambda: all("QUIT" in s.commands for s in sess), 10,
                 what="QUIT on every connection")


def test_idle_connection_closed_with_quit(relay, world):
    ng = relay("relay_connection_idle_timeout 1s;")
    sink = world.sinks["idle"]
    m = h.unique("idl")
    send(ng, m + "@example.test", [m + "@idle.test"], body_for(m))
    sink.wait_accepted(m)
    t0 = time.monotonic()
    sess = sessions_with(sink, m)[0]
    assert "QUIT" not in sess.commands, "closed at once: not cached"
    h.wait_until(lambda: "QUIT" in sess.commands, 5,
                 what="QUIT after relay_connection_idle_timeout")
    waited = time.monotonic() - t0
    assert 0.5 < waited < 4, "idle close after %.1fs" % waited


def test_worker_exits_promptly_with_idle_connections(relay, world):
    ng = relay("relay_connection_idle_timeout 60s;")
    sink = world.sinks["idle"]
    m = h.unique("iex")
    send(ng, m + "@example.test", [m + "@idle.test"], body_for(m))
    sink.wait_accepted(m)
    sess = sessions_with(sink, m)[0]
    t0 = time.monotonic()
    assert ng.stop(), "workers did not exit gracefully"
    assert time.monotonic() - t0 < 5, "the idle timer kept the worker"
    h.wait_until(lambda: "QUIT" in sess.commands or sess.closed_by_peer, 5,
                 what="the idle connection closed at exit")
    assert "QUIT" in sess.commands


def test_dead_cached_connection_is_not_a_failed_attempt(relay, world):
    ng = relay()
    sink = world.sinks["dead"]
    m = h.unique("dead")
    q1 = send(ng, m + "-1@example.test", [m + "-1@dead.test"], body_for(m))
    sink.wait_accepted(m + "-1@")
    q2 = send(ng, m + "-2@example.test", [m + "-2@dead.test"], body_for(m))
    sink.wait_accepted(m + "-2@")
    line = dh.wait_status(ng, q2, m + "-2@dead.test", "sent")[0]
    assert "conn=reused" not in line["line"]
    assert not dh.delivery_lines(ng, q2, status="deferred"), \
        "the dead cached connection counted as an attempt"
    assert "cached connection is gone" in ng.error_log()
    assert len(sessions_with(sink, m)) == 2
    dh.wait_queue_gone(ng, q1)
    dh.wait_queue_gone(ng, q2)


def test_destination_concurrency_limit(relay, world):
    ng = relay("relay_destination_concurrency 2;")
    sink = world.sinks["conc"]
    with sink.lock:
        sink.max_active = sink.active
    m = h.unique("conc")
    n = 10
    errors = []

    def one(i):
        try:
            send(ng, "%s-%d@example.test" % (m, i),
                 ["%s-%d@conc.test" % (m, i)], body_for(m))
        except Exception as e:          # noqa: BLE001 (reported below)
            errors.append(e)

    ts = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
    sink.wait_accepted(m, count=n, timeout=30)
    assert sink.max_active <= 2, \
        "%d simultaneous connections, limit 2" % sink.max_active
    assert len(sink.accepted(m)) == n
    assert not [l for l in dh.delivery_lines(ng)
                if m in l["rcpt"] and l["status"] != "sent"]


def test_rcpt_4xx_at_primary_goes_to_next_mx(relay, world):
    ng = relay()
    m = h.unique("soft")
    ok, soft = "ok-%s@soft.test" % m, "soft-%s@soft.test" % m
    qid = send(ng, m + "@example.test", [ok, soft], body_for(m))
    mx1, mx2 = world.sinks["soft1"], world.sinks["soft2"]
    t1 = mx1.wait_accepted(m)[0]
    t2 = mx2.wait_accepted(m)[0]
    assert t1.rcpts == [ok], t1
    assert t2.rcpts == [soft], "only the deferred recipient: %r" % t2
    l1 = dh.wait_status(ng, qid, ok, "sent")[0]
    l2 = dh.wait_status(ng, qid, soft, "sent")[0]
    assert "127.0.0.7" in l1["relay"] and "127.0.0.8" in l2["relay"]
    assert not dh.delivery_lines(ng, qid, status="deferred")
    dh.wait_queue_gone(ng, qid)
    time.sleep(0.5)
    assert len(mx1.accepted(m)) == 1 and len(mx2.accepted(m)) == 1


def send_params(ng, sender, rcpts, body, rcpt_params=""):
    with h.SMTPConn(ng.port("main")) as c:
        c.ehlo("client.test")
        assert c.cmd("MAIL FROM:<%s> ENVID=env-%s" % (sender, sender)).code \
            == 250
        for a in rcpts:
            r = c.cmd("RCPT TO:<%s>%s" % (a, rcpt_params))
            assert r.code == 250, r
        assert c.cmd("DATA").code == 354
        r = c.send_data(body)
        assert r.code == 250 and r.queue_id, r
        c.cmd("QUIT")
        return r.queue_id


def test_delay_warning_dsn_once(relay, world):
    ng = relay("relay_delay_warning 2s;")
    m = h.unique("dly")
    rcpt = "%s@defer.test" % m
    qid = send_params(ng, m + "@example.test", [rcpt], body_for(m),
                      " NOTIFY=DELAY,FAILURE ORCPT=rfc822;" + rcpt)
    # a recipient with NOTIFY=FAILURE only never gets a delay warning
    m2 = h.unique("dlyf")
    qid2 = send_params(ng, m2 + "@example.test", ["%s@defer.test" % m2],
                       body_for(m2), " NOTIFY=FAILURE")
    raw, msg = dh.wait_dsn(ng, m, count=1, timeout=20)[0]
    t_dsn = time.monotonic()
    assert "Delayed Mail" in msg["Subject"], msg["Subject"]
    assert msg["To"] == "<%s@example.test>" % m
    human, blocks, returned = dh.dsn_parts(msg)
    assert "delivered yet" in human.get_payload(), human.get_payload()
    head = blocks[0]
    assert dh.field(head, "Reporting-MTA") == "dns; relay.test"
    assert dh.field(head, "Original-Envelope-Id") == "env-%s@example.test" % m
    assert dh.field(head, "Arrival-Date")
    rb = dh.recipient_block(blocks, rcpt)
    assert dh.field(rb, "Action") == "delayed", rb
    assert dh.field(rb, "Status") == "4.3.0", rb
    assert dh.field(rb, "Final-Recipient").lower() == "rfc822; " + rcpt
    assert dh.field(rb, "Original-Recipient").lower() == "rfc822; " + rcpt
    assert "sink-defer is having a bad day" in \
        dh.field(rb, "Diagnostic-Code"), rb
    until = email.utils.parsedate_to_datetime(
        dh.field(rb, "Will-Retry-Until"))
    arrival = email.utils.parsedate_to_datetime(dh.field(head,
                                                         "Arrival-Date"))
    assert (until - arrival).total_seconds() == 3600, \
        "Will-Retry-Until is not arrival + relay_queue_lifetime (1h)"
    assert returned and m in returned, "no original header returned"
    # once: more attempts, a restart, more attempts, still one
    n0 = len(dh.delivery_lines(ng, qid, status="deferred"))
    h.wait_until(lambda: len(dh.delivery_lines(ng, qid, status="deferred"))
                 >= n0 + 2, 15, what="two more attempts")
    ng.stop()
    ng.start()
    h.wait_until(lambda: len(dh.delivery_lines(ng, qid, status="deferred"))
                 >= n0 + 4, 20, what="two more attempts after a restart")
    assert len(dh.dsn_messages(ng, m)) == 1, "delay DSN sent more than once"
    assert time.monotonic() - t_dsn > 2
    assert not dh.dsn_messages(ng, m2), \
        "delay DSN for a recipient with NOTIFY=FAILURE"
    assert "%s: sender delay notification" % qid in ng.error_log()
    assert dh.delivery_lines(ng, qid2, status="deferred")
