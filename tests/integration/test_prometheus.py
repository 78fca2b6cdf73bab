"""
A real Prometheus (Debian's package, started here on loopback with a
generated configuration and its storage in the test's directory, never the
system's service) scrapes a relay node and controld every second; the
values are read back through Prometheus's HTTP query API after known
traffic: N accepted, M delivered, K bounced; the queue gauge up while the
destination is down and back to 0 once it is up and an operator flushed
the queue through controld (which the accounting log records); controld's
nodes per version and ACKs; and "relayctl stats" over the same fleet.

controld runs --insecure here (mTLS is tested elsewhere); the node
subscribes with relay_control ... insecure and a status every second.
Sinks on 127.0.0.66; HTTP listeners on 26000-26499.
"""

import json
import os
import subprocess
from pathlib import Path

import pytest

import controlharness as ch
import deliveryharness as dh
import metricsharness as mh
import relayharness as h


SINK_IP = "127.0.0.66"


def relayctl(ctld, *args, timeout=10):
    env = dict(os.environ)
    env["RELAYCTL_SERVER"] = "127.0.0.1:%d" % ctld.port
    for k in ("RELAYCTL_CA", "RELAYCTL_CERT", "RELAYCTL_KEY",
              "RELAYCTL_SPOOL", "GRPC_VERBOSITY"):
        env.pop(k, None)
    p = subprocess.run([ch.RELAYCTL, "--timeout", "8", *map(str, args)],
                       env=env, capture_output=True, text=True,
                       timeout=timeout + 20)
    return ch.Run(p)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, certs):
    h.require_module()
    work = tmp_path_factory.mktemp("prometheus")

    def rcpt(sess, txn, addr):
        if addr.startswith("bounce"):
            return "550 5.1.1 <%s>: User unknown" % addr
        return None

    sport = dh.alloc_port((SINK_IP,))
    sink = dh.Sink(SINK_IP, sport, "prom-sink", rcpt_reply=rcpt)
    sink.start()

    cmport = mh.alloc_port()
    ctld = ch.Controld(work / "controld", work, insecure=True,
                       extra=["--metrics-listen",
                              "127.0.0.1:%d" % cmport]).start()
    ctld.metrics_port = cmport

    nmport = mh.alloc_port()
    extra = "\n".join("    " + l for l in [
        "relay_control 127.0.0.1:%d node=n1 insecure;" % ctld.port,
        "relay_control_status_interval 1s;",
        "relay_delivery on;",
        "relay_resolver 127.0.0.1:1;",
        "relay_connect_timeout 1s;",
        "relay_queue_scan_interval 1s;",
        "relay_retry_backoff 1s 2s;",
        "relay_smtp_port %d;" % sport,
        "relay_route prom.test [%s];" % SINK_IP,
        "relay_accounting_log logs/accounting.log;",
    ])
    ng = h.launch(tmp_path_factory, certs, "prom-node", stream_extra=extra,
                  http_extra=mh.http_block(nmport))
    ng.metrics_port = nmport

    prom = mh.Prometheus(work / "prometheus", {
        "relay": "127.0.0.1:%d" % nmport,
        "controld": "127.0.0.1:%d" % cmport}).start()

    yield {"sink": sink, "ctld": ctld, "node": ng, "prom": prom,
           "work": work}

    prom.stop()
    ng.stop()
    ctld.stop()
    sink.stop()
    ng.assert_log_clean()


def test_prometheus_reads_the_node_and_controld(fleet):
    prom, ng, sink, ctld = (fleet["prom"], fleet["node"], fleet["sink"],
                            fleet["ctld"])
    tag = h.unique("pr")

    # a policy version for the node to ACK
    p = fleet["work"] / "p.policy"
    p.write_text("route prom.test [%s]:%d;\n" % (SINK_IP, sink.port))
    r = relayctl(ctld, "apply", p, "-m", "prometheus test")
    assert r.rc == 0, r

    # known traffic: 4 messages accepted, 5 recipients delivered (one of
    # them local), 2 bounced
    with h.SMTPConn(ng.port("main")) as c:
        c.ehlo("p.test")
        c.message("s@example.test", ["a-%s@prom.test" % tag,
                                     "b-%s@prom.test" % tag],
                  h.simple_body(tag))
        c.message("s@example.test", ["c-%s@prom.test" % tag,
                                     "bounce1-%s@prom.test" % tag],
                  h.simple_body(tag))
        c.message("s@example.test", ["d-%s@prom.test" % tag,
                                     "bounce2-%s@prom.test" % tag],
                  h.simple_body(tag))
        c.message("s@example.test", ["l-%s@example.test" % tag],
                  h.simple_body(tag))
        c.cmd("QUIT")

    sink.wait_accepted(tag, 3)

    prom.wait('sum(relay_accepted_messages_total{job="relay"})',
              lambda v: v == 4)
    prom.wait('sum(relay_deliveries_total{job="relay",outcome="sent",'
              'class="remote"})', lambda v: v == 4)
    prom.wait('sum(relay_deliveries_total{job="relay",outcome="bounced"})',
              lambda v: v == 2)
    # the local one and the two DSNs (to s@example.test)
    prom.wait('sum(relay_deliveries_total{job="relay",outcome="sent",'
              'class="local"})', lambda v: v == 3)
    prom.wait('sum(relay_deliveries_classified_total{job="relay",'
              'category="bad-mailbox"})', lambda v: v == 2)
    prom.wait('relay_smtp_data_to_reply_seconds_count{job="relay"}',
              lambda v: v == 4)

    # controld: the node runs version 1, acknowledged, the latency seen
    prom.wait('relay_controld_nodes{job="controld",version="1"}',
              lambda v: v == 1)
    prom.wait('relay_controld_acks_total{job="controld"}', lambda v: v >= 1)
    prom.wait('relay_controld_ack_latency_seconds_count{job="controld"}',
              lambda v: v >= 1)
    prom.wait('relay_controld_applies_total{job="controld",kind="apply",'
              'result="applied"}', lambda v: v == 1)
    prom.wait('relay_control_applied_version{job="relay"}', lambda v: v == 1)
    prom.wait('relay_control_connected{job="relay"}', lambda v: v == 1)


def test_queue_gauge_up_while_the_sink_is_down(fleet):
    prom, ng, sink, ctld = (fleet["prom"], fleet["node"], fleet["sink"],
                            fleet["ctld"])
    tag = h.unique("pd")
    prom.wait('sum(relay_queue_messages{job="relay"})', lambda v: v == 0)

    sink.stop()
    try:
        with h.SMTPConn(ng.port("main")) as c:
            c.ehlo("p.test")
            for i in range(3):
                c.message("s@example.test", ["q%d-%s@prom.test" % (i, tag)],
                          h.simple_body(tag))
            c.cmd("QUIT")

        prom.wait('sum(relay_queue_messages{job="relay"})',
                  lambda v: v == 3)
        prom.wait('sum(relay_queue_recipients{job="relay"})',
                  lambda v: v == 3)
        prom.wait('relay_queue_oldest_message_age_seconds{job="relay"}',
                  lambda v: v >= 1)
        prom.wait('sum(relay_deliveries_classified_total{job="relay",'
                  'outcome="deferred",category="connection-failure"})',
                  lambda v: v >= 3)

        # the node classified the last error of each for queue listings
        q = relayctl(ctld, "--json", "queue", "list", "--node", "n1")
        assert q.rc == 0, q
        mine = [e for e in q.json()["results"][0]["entries"]
                if tag in " ".join(e["pending"])]
        assert len(mine) == 3, q
        assert {e["category"] for e in mine} == {"connection-failure"}, mine
    finally:
        sink.start()

    # an operator flushes the queue through controld: no waiting for the
    # backoff, and a record of it
    r = relayctl(ctld, "queue", "flush", "--node", "n1")
    assert r.rc in (0, 1), r
    sink.wait_accepted(tag, 3, timeout=20)
    prom.wait('sum(relay_queue_messages{job="relay"})', lambda v: v == 0)
    prom.wait('relay_queue_oldest_message_age_seconds{job="relay"}',
              lambda v: v == 0)

    rs = mh.records(ng.prefix / "logs" / "accounting.log")
    assert any(x["type"] == "operator" and x["action"] == "flush"
               and x["source"] == "controld" for x in rs), \
        [x for x in rs if x["type"] == "operator"]
    prom.wait('sum(relay_operator_actions_total{job="relay",'
              'action="flush"})', lambda v: v >= 1)


def test_relayctl_stats(fleet):
    ng, ctld = fleet["node"], fleet["ctld"]

    r = relayctl(ctld, "--json", "stats", "--count", "1")
    assert r.rc == 0, r
    j = json.loads(r.out)
    n1 = [n for n in j["nodes"] if n["node_id"] == "n1"][0]
    assert n1["connected"] and n1["applied_version"] == 1
    assert n1["window_s"] >= 1
    # within the last minute: the traffic of the tests above
    assert n1["accepted_per_s"] > 0 and n1["delivered_per_s"] > 0, n1
    assert n1["deferred_total_by_category"].get("connection-failure", 0) \
        >= 3, n1
    assert j["total"]["queue_messages"] == n1["queue_messages"]

    t = relayctl(ctld, "stats", "--count", "2", "--interval", "0.2")
    assert t.rc == 0, t
    heads = [l for l in t.out.splitlines() if l.startswith("NODE")]
    assert len(heads) == 2, t.out
    assert "ACCEPTED/S" in heads[0] and "DEFERRALS-LAST-MINUTE" in heads[0]
    row = [l for l in t.out.splitlines() if l.startswith("n1 ")][0]
    assert " yes " in row and " 1 " in row, row
    assert any(l.startswith("TOTAL ") for l in t.out.splitlines())
