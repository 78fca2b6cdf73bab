"""
The node's metrics (ngx_relay_metrics.c, served by "relay_metrics" in an
http{} location): the exposition parses with Debian's prometheus_client
parser, every family once and no series twice; known traffic moves the
counters it should (SMTP sessions and refusals by reason, accepted
messages, deliveries by class, outcome, destination pattern, egress pool
and address, tenant and bounce category, DSNs, syncs, limit hits by
rule); the queue gauges
follow the schedule at once (up while the destination refuses, back to 0
when it is delivered); the counters survive a reload and a killed worker;
and mail to 1,000 recipient domains adds no series.

Sinks on 127.0.0.60-63 (the other tests use 127.0.0.2-49); the metrics
listener on a port of 26000-26499.  No DNS: every remote domain has a
route to an [address]:port.
"""

import re
import signal
import os

import pytest

import deliveryharness as dh
import metricsharness as mh
import relayharness as h


SINK_IP = "127.0.0.60"          # accepts, or refuses by recipient name
DOWN_IP = "127.0.0.61"          # nobody listens until a test starts one
MANY_IP = "127.0.0.62"          # nobody listens: the 1,000 domains


@pytest.fixture(scope="module")
def sink():
    port = dh.alloc_port((SINK_IP, DOWN_IP, MANY_IP))

    def rcpt(sess, txn, addr):
        if addr.startswith("bounce"):
            return "550 5.1.1 <%s>: Recipient address rejected: User " \
                   "unknown" % addr
        if addr.startswith("full"):
            return "552 5.2.2 <%s>: Mailbox full" % addr
        if addr.startswith("grey"):
            return "450 4.2.0 <%s>: Recipient address rejected: " \
                   "Greylisted" % addr
        return None

    s = dh.Sink(SINK_IP, port, "metrics-sink", rcpt_reply=rcpt)
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def node(tmp_path_factory, certs, sink):
    mport = mh.alloc_port()
    extra = "\n".join("    " + l for l in [
        "relay_delivery on;",
        "relay_resolver 127.0.0.1:1;",
        "relay_connect_timeout 1s;",
        "relay_queue_scan_interval 1s;",
        "relay_retry_backoff 1s 2s;",
        "relay_smtp_port %d;" % sink.port,
        "relay_route sink.test [%s];" % SINK_IP,
        "relay_route down.test [%s];" % DOWN_IP,
        "relay_route .many.test [%s];" % MANY_IP,
        "relay_destination_limit sink.test connections=10;",
        "relay_egress_pool bulk ehlo=relay.test 127.0.0.1;",
        "relay_egress_rule sender_domain example.test bulk;",
        "relay_tenant acme;",
        "relay_limit sender_domain limited.example window=1h messages=1;",
        "relay_accounting_log logs/accounting.log;",
    ])
    ng = h.launch(tmp_path_factory, certs, "metrics", stream_extra=extra,
                  http_extra=mh.http_block(mport))
    ng.metrics_port = mport
    ng.allowed_alerts.append(r"exited on signal 9")
    yield ng
    ng.stop()
    ng.assert_log_clean()


def metrics(ng):
    return mh.parse(mh.scrape(ng.metrics_port))


def send(ng, sender, rcpts, tag, port="main"):
    with h.SMTPConn(ng.port(port)) as c:
        qid = c.message(sender, rcpts, h.simple_body(tag), ehlo="m.test")
        c.cmd("QUIT")
    return qid


def listener(ng, name="main"):
    return "127.0.0.1:%d" % ng.port(name)


# --------------------------------------------------------------------------


def test_exposition_is_valid_prometheus_text(node):
    status, headers, body = mh.http_get(node.metrics_port)
    assert status == 200
    assert headers["Content-Type"] == \
        "text/plain; version=0.0.4; charset=utf-8"
    assert int(headers["Content-Length"]) == len(body)

    samples = mh.parse(body.decode())
    names = {n for n, _ in samples}
    for family in ("relay_smtp_sessions_total", "relay_deliveries_total",
                   "relay_queue_messages", "relay_smtp_rejections_total",
                   "relay_spool_sync_seconds_bucket",
                   "relay_metrics_start_time_seconds"):
        assert family in names, family
    # every name follows the conventions
    for n in names:
        assert n.startswith("relay_"), n
        assert re.match(r"^[a-z_]+$", n), n

    # HEAD: the headers only; other methods are refused
    status, headers, body = mh.http_get(node.metrics_port, method="HEAD")
    assert status == 200 and body == b""
    status, _, _ = mh.http_get(node.metrics_port, method="POST")
    assert status == 405


def test_known_traffic_moves_the_counters(node, sink):
    before = metrics(node)
    tag = h.unique("kt")

    local = ["kt%d-%s@example.test" % (i, tag) for i in range(3)]
    sent = ["ok%d-%s@sink.test" % (i, tag) for i in range(4)]
    bounced = ["bounce%d-%s@sink.test" % (i, tag) for i in range(2)]
    grey = ["grey-%s@sink.test" % tag]

    q1 = send(node, "s-%s@example.test" % tag, local, tag + "a")
    q2 = send(node, "s-%s@example.test" % tag, sent[:2] + bounced,
              tag + "b")
    q3 = send(node, "s-%s@example.test" % tag, sent[2:] + grey, tag + "c")

    # refusals of the SMTP server, by reason
    with h.SMTPConn(node.port("untrusted")) as c:
        c.ehlo()
        c.expect("MAIL FROM:<x@example.org>", 250)
        c.expect("RCPT TO:<a@elsewhere.example>", 554, "5.7.1")
        c.expect("RCPT TO:<nobody-%s@strict.test>" % tag, 550, "5.1.1")
        c.cmd("QUIT")

    sink.wait_accepted(tag, 2)
    dh.wait_status(node, q2, bounced[1], "bounced")
    dh.wait_status(node, q3, grey[0], "deferred")
    h.wait_delivered(node, "example.test", local[2].split("@")[0])

    def delta(after, name, **labels):
        return mh.value(after, name, **labels) \
            - mh.value(before, name, **labels)

    def done(m):
        return (delta(m, "relay_deliveries_total", **{"class": "remote",
                                                      "outcome": "bounced"})
                >= 2
                and delta(m, "relay_deliveries_total",
                          **{"class": "local", "outcome": "sent"}) >= 3
                and delta(m, "relay_dsn_total", type="failure") >= 1)

    after = mh.wait_value(node.metrics_port, done, what="the deliveries")

    main = listener(node)
    assert delta(after, "relay_accepted_messages_total", listener=main) == 3
    assert delta(after, "relay_accepted_recipients_total",
                 listener=main) == 10
    assert delta(after, "relay_tenant_accepted_messages_total",
                 tenant="acme") == 3
    assert delta(after, "relay_smtp_sessions_total", listener=main) >= 3
    assert delta(after, "relay_smtp_data_to_reply_seconds_count") == 3
    assert delta(after, "relay_spool_sync_seconds_count",
                 kind="journal") >= 1

    # the three local ones, the remote ones (the DSN adds a local one)
    assert delta(after, "relay_deliveries_total",
                 **{"class": "local", "outcome": "sent"}) >= 3
    assert delta(after, "relay_deliveries_total",
                 **{"class": "remote", "outcome": "sent"}) == 4
    assert delta(after, "relay_deliveries_total",
                 **{"class": "remote", "outcome": "bounced"}) == 2
    assert delta(after, "relay_deliveries_total",
                 **{"class": "remote", "outcome": "deferred"}) >= 1

    # by the policy's pattern, the pool's address, the tenant
    assert delta(after, "relay_destination_deliveries_total",
                 destination="sink.test", outcome="sent") == 4
    assert delta(after, "relay_egress_deliveries_total", pool="bulk",
                 address="127.0.0.1", outcome="sent") == 4
    assert delta(after, "relay_tenant_deliveries_total", tenant="acme",
                 outcome="bounced") == 2

    # the bounce categories, in the metrics and in the log lines
    assert delta(after, "relay_deliveries_classified_total",
                 outcome="bounced", category="bad-mailbox") == 2
    assert delta(after, "relay_deliveries_classified_total",
                 outcome="deferred", category="rate-limited") >= 1
    for d in dh.delivery_lines(node, q2, status="bounced"):
        assert d["line"].endswith(", category=bad-mailbox"), d["line"]
    assert dh.delivery_lines(node, q3, grey[0], "deferred")[0]["line"] \
        .endswith(", category=rate-limited")

    assert delta(after, "relay_smtp_rejections_total",
                 reason="relay_denied") == 1
    assert delta(after, "relay_smtp_rejections_total",
                 reason="unknown_user") == 1
    assert delta(after, "relay_connection_cache_misses_total") >= 1

    # arrival to delivery: the sent ones, in whole seconds
    assert delta(after, "relay_delivery_delay_seconds_count",
                 **{"class": "remote"}) == 4
    assert mh.value(after, "relay_delivery_delay_seconds_bucket",
                    **{"class": "remote", "le": "+Inf"}) \
        >= mh.value(after, "relay_delivery_delay_seconds_bucket",
                    **{"class": "remote", "le": "60"})
    assert q1


def test_limit_hits_by_rule(node):
    before = metrics(node)
    with h.SMTPConn(node.port("main")) as c:
        c.message("a@limited.example", ["l1@example.test"],
                  h.simple_body("lim"), ehlo="l.test")
        c.expect("MAIL FROM:<b@limited.example>", 450, "4.7.1")
        c.cmd("QUIT")
    after = metrics(node)
    rule = "inbound_limit sender_domain limited.example"
    assert mh.value(after, "relay_limit_hits_total", rule=rule) == \
        mh.value(before, "relay_limit_hits_total", rule=rule) + 1
    assert mh.value(after, "relay_smtp_rejections_total", reason="limit") \
        == mh.value(before, "relay_smtp_rejections_total",
                    reason="limit") + 1


def test_queue_gauges_follow_the_schedule(node, sink):
    tag = h.unique("qg")

    # the figures before, once the earlier tests' mail in flight (a local
    # delivery, a DSN) has settled
    base = mh.wait_value(
        node.metrics_port,
        lambda m: mh.value(m, "relay_queue_messages", state="active")
        + mh.value(m, "relay_queue_messages", state="new") == 0,
        timeout=20, what="no message new or in an attempt")
    queued = mh.total(base, "relay_queue_messages")

    def waiting(m):
        return mh.value(m, "relay_queue_messages", state="deferred") \
            + mh.value(m, "relay_queue_messages", state="parked")

    qid = send(node, "q-%s@example.org" % tag, ["a-%s@down.test" % tag],
               tag)

    # up at once, deferred after the first attempt: no scan waited for
    m = mh.wait_value(
        node.metrics_port,
        lambda m: mh.total(m, "relay_queue_messages") == queued + 1
        and waiting(m) == waiting(base) + 1,
        timeout=20, what="the message deferred in the gauges")
    assert mh.total(m, "relay_queue_recipients") >= 1
    assert mh.value(m, "relay_deliveries_classified_total",
                    outcome="deferred", category="connection-failure") >= 1

    # the destination comes up: delivered at the next try, back to 0
    up = dh.Sink(DOWN_IP, sink.port, "metrics-down")
    up.start()
    try:
        up.wait_accepted(tag, 1, timeout=20)
        m = mh.wait_value(
            node.metrics_port,
            lambda m: mh.total(m, "relay_queue_messages") == queued,
            timeout=10, what="the queue gauges back")
        assert mh.value(m, "relay_queue_oldest_message_age_seconds") == 0 \
            or queued
    finally:
        up.stop()
    dh.wait_queue_gone(node, qid)


def test_reload_keeps_the_counters(node):
    tag = h.unique("rl")
    send(node, "r@example.org", ["r-%s@example.test" % tag], tag)
    before = metrics(node)

    node.reload()
    h.wait_until(lambda: len(node.worker_pids()) == 2, 15,
                 what="the new workers")
    send(node, "r@example.org", ["r2-%s@example.test" % tag], tag + "x")

    after = metrics(node)
    main = listener(node)
    assert mh.value(after, "relay_metrics_start_time_seconds") == \
        mh.value(before, "relay_metrics_start_time_seconds")
    assert mh.value(after, "relay_accepted_messages_total",
                    listener=main) == \
        mh.value(before, "relay_accepted_messages_total", listener=main) + 1


def test_a_killed_worker_loses_nothing(node):
    main = listener(node)
    before = metrics(node)
    conns = [h.SMTPConn(node.port("main")) for _ in range(4)]
    try:
        m = mh.wait_value(
            node.metrics_port,
            lambda m: mh.value(m, "relay_smtp_sessions_active",
                               listener=main) >= 4,
            what="4 sessions open")
        victim = h.worker_of(node, conns[0])
        theirs = [c for c in conns if h.worker_of(node, c) == victim]
        mark = node.log_mark()
        os.kill(victim, signal.SIGKILL)
        h.wait_until(lambda: victim not in node.worker_pids()
                     and len(node.worker_pids()) == 2, 10,
                     what="the worker replaced")

        # the dead worker's sessions leave the gauge, its counts stay
        open_before = mh.value(m, "relay_smtp_sessions_active",
                               listener=main)
        after = mh.wait_value(
            node.metrics_port,
            lambda a: mh.value(a, "relay_smtp_sessions_active",
                               listener=main)
            <= open_before - len(theirs),
            what="the killed worker's sessions out of the gauge")
        assert mh.value(after, "relay_smtp_sessions_total",
                        listener=main) >= \
            mh.value(before, "relay_smtp_sessions_total", listener=main) + 4
        node.assert_no_crash(mark)
    finally:
        for c in conns:
            c.close()


def test_a_thousand_domains_add_no_series(node):
    """Last in the file: its 200 messages stay queued (their destination
    refuses)."""
    tag = h.unique("k")
    before = mh.scrape(node.metrics_port)
    nseries = len(mh.parse(before))

    with h.SMTPConn(node.port("main")) as c:
        c.ehlo("many.test")
        for i in range(200):
            rcpts = ["r@d%d-%s.many.test" % (5 * i + j, tag)
                     for j in range(5)]
            c.message("k@example.org", rcpts, h.simple_body(tag))
        c.cmd("QUIT")

    m = mh.wait_value(
        node.metrics_port,
        lambda m: mh.value(m, "relay_destination_deliveries_total",
                           destination=".many.test", outcome="deferred")
        >= 1000, timeout=60, what="1,000 deferrals")

    text = mh.scrape(node.metrics_port)
    assert len(m) <= nseries + 8, \
        "%d series, %d before" % (len(m), nseries)
    assert "%s.many.test" % tag not in text
    assert mh.label_values(m, "relay_destination_deliveries_total",
                           "destination") <= {"*", "sink.test",
                                              ".many.test", "down.test"}
    # and every record of the accounting log parses
    rs = mh.records(node.prefix / "logs" / "accounting.log")
    assert sum(1 for r in rs if r["type"] == "delivery"
               and r.get("destination") == ".many.test") >= 1000
