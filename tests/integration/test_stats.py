"""
controld's side of the observability: its own /metrics (--metrics-listen,
a small HTTP/1.0 server of its own) and the rates behind "relayctl stats",
with FakeNodes whose statuses say exactly what the numbers must be:
connected nodes per version, applies by result, ACKs and NACKs with their
latency, accepted and delivered per second and deferrals by category over
the last minute, totals that start again when a node restarts.
"""

import json
import os
import re
import socket
import subprocess
import time

import pytest

import controlharness as ch
import metricsharness as mh
import relayharness as h


@pytest.fixture(scope="module")
def ctld(tmp_path_factory):
    work = tmp_path_factory.mktemp("stats")
    ch.load_stubs(work / "gen")
    certs = ch.make_certs(work / "certs", "s1", "s2")
    port = mh.alloc_port()
    c = ch.Controld(work / "controld", certs,
                    extra=["--metrics-listen", "127.0.0.1:%d" % port])
    c.start()
    c.metrics_port = port
    c.work = work
    yield c
    assert c.stop() == 0


def relayctl(ctld, *args):
    env = dict(os.environ)
    env["RELAYCTL_SERVER"] = "127.0.0.1:%d" % ctld.port
    env["RELAYCTL_CA"] = str(ctld.certs / "ca.pem")
    env["RELAYCTL_CERT"] = str(ctld.certs / "operator.pem")
    env["RELAYCTL_KEY"] = str(ctld.certs / "operator.key")
    p = subprocess.run([ch.RELAYCTL, *map(str, args)], env=env,
                       capture_output=True, text=True, timeout=30)
    return ch.Run(p)


def status(accepted, delivered, deferred=None, queue=0):
    st = ch.pb.NodeStatus(accepted_total=accepted,
                          delivered_total=delivered, queue_messages=queue,
                          queue_deferred=queue)
    for cat, n in (deferred or {}).items():
        st.deferred_by_category.add(category=cat, count=n)
    return st


def test_controld_metrics_and_stats(ctld):
    m = mh.parse(mh.scrape(ctld.metrics_port))
    assert mh.value(m, "relay_controld_nodes_known") == 0
    assert mh.value(m, "relay_controld_policy_version") == 0

    # anything but GET /metrics
    status_, _, _ = mh.http_get(ctld.metrics_port, "/nothing")
    assert status_ == 404
    status_, _, _ = mh.http_get(ctld.metrics_port, method="POST")
    assert status_ == 405
    s = socket.create_connection(("127.0.0.1", ctld.metrics_port))
    s.sendall(b"garbage\r\n\r\n")
    s.settimeout(5)
    assert s.recv(100).startswith(b"HTTP/1.0 4")
    s.close()

    ch_ack = ch.FakeNode(ctld, "s1")
    ch_nack = ch.FakeNode(ctld, "s2", ack="no thanks")
    try:
        p = ctld.work / "p.policy"
        p.write_text("route example.com [10.0.0.1]:25;\n")
        assert relayctl(ctld, "apply", p).rc == 10      # s2 NACKs
        p.write_text("route example.com [10.0.0.1]:25;\n")
        assert relayctl(ctld, "apply", p).rc == 1        # unchanged
        p.write_text("route example.com [10.0.0.1:25;\n")
        assert relayctl(ctld, "apply", p).rc == 3        # invalid

        m = mh.wait_value(
            ctld.metrics_port,
            lambda m: mh.value(m, "relay_controld_nacks_total") == 1
            and mh.value(m, "relay_controld_acks_total") == 1,
            what="an ACK and a NACK")
        assert mh.value(m, "relay_controld_nodes", version="1") == 1
        assert mh.value(m, "relay_controld_nodes", version="0") == 1
        assert mh.value(m, "relay_controld_nodes_known") == 2
        assert mh.value(m, "relay_controld_policy_version") == 1
        assert mh.value(m, "relay_controld_node_sessions_total") == 2
        assert mh.value(m, "relay_controld_ack_latency_seconds_count") == 2
        assert mh.value(m, "relay_controld_ack_latency_seconds_bucket",
                        le="+Inf") == 2
        for result, n in (("applied", 1), ("unchanged", 1), ("invalid", 1),
                          ("failed", 0)):
            assert mh.value(m, "relay_controld_applies_total",
                            kind="apply", result=result) == n, result

        # rates: the difference over the minute, per second
        ch_ack.send(status=status(100, 50, {"rate-limited": 5}, queue=7))
        t0 = time.monotonic()
        time.sleep(2.1)
        ch_ack.send(status=status(300, 150, {"rate-limited": 25,
                                             "bad-mailbox": 2}, queue=9))
        elapsed = time.monotonic() - t0

        def rated():
            r = relayctl(ctld, "--json", "stats")
            j = json.loads(r.out)
            n = [x for x in j["nodes"] if x["node_id"] == "s1"][0]
            return (j, n) if n["window_s"] >= 2 else None
        j, n = h.wait_until(rated, 10, 0.1, "two statuses of s1")
        assert abs(n["accepted_per_s"] - 200 / elapsed) < 15, n
        assert abs(n["delivered_per_s"] - 100 / elapsed) < 8, n
        assert n["deferred_last_minute"] == {"rate-limited": 20,
                                             "bad-mailbox": 2}, n
        assert n["queue_messages"] == 9
        assert j["total"]["deferred_last_minute"]["rate-limited"] == 20

        text = relayctl(ctld, "stats")
        assert text.rc == 0, text
        row = [l for l in text.out.splitlines() if l.startswith("s1 ")][0]
        assert re.search(r"rate-limited 20, bad-mailbox 2\s*$", row), row

        # a node that restarted: its totals went back, the rates start
        # again from there
        ch_ack.send(status=status(3, 1))
        time.sleep(1.1)
        ch_ack.send(status=status(13, 1))

        def restarted():
            r = relayctl(ctld, "--json", "stats")
            n = [x for x in json.loads(r.out)["nodes"]
                 if x["node_id"] == "s1"][0]
            return n if n["accepted_per_s"] < 50 and n["window_s"] >= 1 \
                else None
        n = h.wait_until(restarted, 10, 0.1, "rates after a restart")
        assert n["deferred_last_minute"] == {}
    finally:
        ch_ack.close()
        ch_nack.close()
