"""
Outbound shaping per destination (relay_destination_limit, counted in
shared memory across workers): the sink never sees more concurrent
connections or messages per connection than the limit; over the message
rate, mail waits in the queue (not an attempt, never a bounce); a reply
matching backoff_reply puts the destination in slow mode for a while, then
it recovers.

Sinks on 127.0.0.45-47 (the delivery tests use 127.0.0.2-30, egress 40-44).
"""

import threading
import time

import pytest

import relayharness as h
import deliveryharness as dh


CONC_IP, RATE_IP, SLOW_IP = "127.0.0.45", "127.0.0.46", "127.0.0.47"


def established_to(ip, port):
    """Client-side TCP connections to ip:port now (from /proc/net/tcp)."""
    want = "%s:%04X" % ("".join("%02X" % int(b)
                                for b in reversed(ip.split("."))), port)
    n = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[2] == want and fields[3] == "01":
                n += 1
    return n


@pytest.fixture(scope="module")
def sinks():
    port = dh.alloc_port((CONC_IP, RATE_IP, SLOW_IP))
    slow_lock = threading.Lock()
    slow_seen = []

    def slow_mail(sess, txn, sender):
        with slow_lock:
            slow_seen.append(time.time())
            if len(slow_seen) == 1:
                return "421 4.7.0 rate limited, slow down"
        return None

    s = {
        "conc": dh.Sink(CONC_IP, port, "shape-conc"),
        "rate": dh.Sink(RATE_IP, port, "shape-rate"),
        "slow": dh.Sink(SLOW_IP, port, "shape-slow", mail_reply=slow_mail),
    }
    for x in s.values():
        x.start()
    yield s, port
    for x in s.values():
        x.stop()


@pytest.fixture(scope="module")
def srelay(tmp_path_factory, certs, sinks):
    s, port = sinks
    lines = [
        "relay_delivery on;",
        "relay_resolver 127.0.0.1:1;",
        "relay_queue_scan_interval 1s;",
        "relay_retry_backoff 1s 2s;",
        "relay_route conc.test [%s]:%d;" % (CONC_IP, port),
        "relay_route rate.test [%s]:%d;" % (RATE_IP, port),
        "relay_route hour.test [%s]:%d;" % (RATE_IP, port),
        "relay_route slow.test [%s]:%d;" % (SLOW_IP, port),
        "relay_destination_limit conc.test connections=2 "
        "messages_per_connection=3;",
        "relay_destination_limit rate.test messages_per_minute=3;",
        "relay_destination_limit hour.test messages_per_hour=2;",
        "relay_destination_limit slow.test \"backoff_reply=rate limited\" "
        "backoff=4s;",
    ]
    ng = h.launch(tmp_path_factory, certs, "shaping", workers=2,
                  stream_extra="\n".join("    " + l for l in lines))
    yield ng
    ng.stop()
    ng.assert_log_clean()
    ng.assert_no_crash()


def send(ng, rcpt, tag):
    c = h.SMTPConn(ng.port("main"))
    c.ehlo()
    qid = c.message("s@example.org", [rcpt], h.simple_body(tag))
    c.close()
    return qid


def test_concurrent_connections_across_workers(srelay, sinks):
    s, port = sinks
    sink = s["conc"]
    hold = threading.Event()
    sink.hold_dot = hold
    try:
        tags = [h.unique("cc") for _ in range(10)]
        for tag in tags:
            send(srelay, "%s@conc.test" % tag, tag)
        # both workers have mail for it; watch the connections for a while
        peak = 0
        end = time.monotonic() + 3
        while time.monotonic() < end:
            peak = max(peak, established_to(CONC_IP, port))
            time.sleep(0.02)
        assert 1 <= peak <= 2, peak
    finally:
        hold.set()
        sink.reset_holds()
    for tag in tags:
        sink.wait_accepted(tag, timeout=30)
    # messages per connection: at most 3 transactions in any session
    with sink.lock:
        per_session = [len(x.txns) for x in sink.sessions]
    assert max(per_session) <= 3, per_session


def test_message_rate_waits_in_the_queue(srelay, sinks):
    s, port = sinks
    sink = s["rate"]
    # the counting minute is aligned to the clock: not near its end
    while time.time() % 60 > 40:
        time.sleep(0.5)
    tags = [h.unique("rr") for _ in range(6)]
    qids = [send(srelay, "%s@rate.test" % tag, tag) for tag in tags]
    h.wait_until(lambda: len(sink.accepted()) >= 3, timeout=15,
                 what="three messages through")
    time.sleep(3)
    accepted = [t for tag in tags for t in sink.accepted(tag)]
    assert len(accepted) == 3, accepted
    log = srelay.error_log()
    throttled = [q for q in qids if "%s: to=<" % q in log
                 and "reached its messages per minute" in log]
    assert throttled, "no throttled log line"
    # still queued, not counted as attempts, no bounce
    waiting = []
    for path in h.queue_files(srelay):
        head = path.read_bytes().split(b"\n\n", 1)[0].decode()
        if any(tag in head for tag in tags):
            nxt = [l for l in head.splitlines() if l.startswith("next ")][0]
            waiting.append(nxt)
    assert len(waiting) == 3, waiting
    for nxt in waiting:
        assert nxt.endswith(" 0000"), nxt         # attempts still 0
    assert "status=bounced" not in log


def test_backoff_reply_slows_down_then_recovers(srelay, sinks):
    s, port = sinks
    sink = s["slow"]
    first = h.unique("sl")
    # slow mode starts after t0 (at the backoff reply) and ends at a whole
    # second at least 4 s later (ngx_time()), so more than 3 s after t0;
    # measuring from when its log line is seen counted the poll's lag
    t0 = time.monotonic()
    send(srelay, "%s@slow.test" % first, first)
    h.wait_until(lambda: "in slow mode for 4 s" in srelay.error_log(),
                 timeout=15, what="slow mode")
    tags = [h.unique("sl") for _ in range(4)]
    for tag in tags:
        send(srelay, "%s@slow.test" % tag, tag)
    # in slow mode: one message a minute; then back to normal after 4 s
    for tag in [first] + tags:
        sink.wait_accepted(tag, timeout=30)
    times = sorted(t.t_end for tag in tags for t in sink.accepted(tag))
    assert times[-1] - t0 >= 3, (times, t0)          # held back
    assert times[-1] - t0 < 25, (times, t0)          # and recovered
    assert "is in slow mode after a backoff reply" in srelay.error_log()


def test_message_rate_per_hour(srelay, sinks):
    s, port = sinks
    sink = s["rate"]
    # the counting hour is aligned to the clock: not in its last minute
    while time.time() % 3600 > 3540:
        time.sleep(1)
    tags = [h.unique("hr") + "x" for _ in range(4)]
    for tag in tags:
        send(srelay, "%s@hour.test" % tag, tag)
    h.wait_until(lambda: sum(len(sink.accepted(t)) for t in tags) >= 2,
                 timeout=15, what="two messages through")
    time.sleep(3)
    assert sum(len(sink.accepted(t)) for t in tags) == 2
    waiting = [p for p in h.queue_files(srelay)
               if any(t.encode() in p.read_bytes() for t in tags)]
    assert len(waiting) == 2, waiting
    assert "hour.test reached its messages per minute or hour" \
        in srelay.error_log()
