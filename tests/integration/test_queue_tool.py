"""
deploy/relay-queue against a live spool: list (text and --json) with the
last error of a deferred message, flush of one message; and the queue file's
fixed-width "error" line the delivery engine rewrites in place.

Sink on 127.0.0.49 (other files use 127.0.0.2-48).
"""

import json
import subprocess
import threading
from pathlib import Path

import pytest

import relayharness as h
import deliveryharness as dh


SINK_IP = "127.0.0.49"
TOOL = Path(__file__).resolve().parents[2] / "deploy" / "relay-queue"


@pytest.fixture(scope="module")
def world(tmp_path_factory, certs):
    port = dh.alloc_port((SINK_IP,))
    refuse = threading.Event()
    refuse.set()

    def rcpt(sess, txn, addr):
        if refuse.is_set():
            return "451 4.3.0 <%s>: queue tool test says later" % addr
        return None

    sink = dh.Sink(SINK_IP, port, "queue-tool-sink", rcpt_reply=rcpt)
    sink.start()
    lines = [
        "relay_delivery on;",
        "relay_resolver 127.0.0.1:1;",
        "relay_queue_scan_interval 1s;",
        "relay_retry_backoff 1h 2h;",
        "relay_route qt.test [%s]:%d;" % (SINK_IP, port),
    ]
    ng = h.launch(tmp_path_factory, certs, "queue-tool", workers=2,
                  stream_extra="\n".join("    " + l for l in lines))
    yield ng, sink, refuse
    ng.stop()
    sink.stop()
    ng.assert_log_clean()


def tool(ng, *args):
    return subprocess.run(["/usr/bin/python3", str(TOOL), "--spool",
                           str(ng.spool), *args], capture_output=True,
                          text=True, timeout=30)


def test_list_shows_the_last_error_and_flush_retries(world):
    ng, sink, refuse = world
    tag = h.unique("qt")
    c = h.SMTPConn(ng.port("main"))
    c.ehlo()
    qid = c.message("s@example.org", ["%s@qt.test" % tag],
                    h.simple_body(tag))
    c.close()
    h.wait_until(lambda: "%s: to=<%s@qt.test>" % (qid, tag)
                 in ng.error_log(), what="the first attempt")

    r = tool(ng, "list", "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["id"]: row for row in json.loads(r.stdout)}
    row = rows[qid]
    assert row["attempts"] == 1, row
    assert row["pending"] == ["%s@qt.test" % tag], row
    assert "451" in row["last_error"] and "queue tool test says later" \
        in row["last_error"], row
    assert row["last_error"].startswith("<%s@qt.test> " % tag), row

    text = tool(ng, "list")
    assert "last error: <%s@qt.test>" % tag in text.stdout, text.stdout

    # the line is fixed width, space-padded, in the envelope
    head = h.queue_index(ng)[qid][0].read_bytes().split(b"\n\n", 1)[0]
    err = [l for l in head.split(b"\n") if l.startswith(b"error ")][0]
    assert len(err) == 6 + 200, len(err)

    # the next try is an hour away: flush makes it now
    refuse.clear()
    r = tool(ng, "flush", qid)
    assert r.returncode == 0 and "1 message(s) due now" in r.stdout, r
    sink.wait_accepted(tag, timeout=15)
    h.wait_until(lambda: qid not in h.queue_index(ng), timeout=10,
                 what="the queue file to go")


def test_flush_of_an_unknown_id_fails(world):
    ng, _, _ = world
    r = tool(ng, "flush", "nosuchid")
    assert r.returncode == 1
    assert "nosuchid: no such message" in r.stderr
