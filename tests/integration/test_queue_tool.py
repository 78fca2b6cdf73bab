"""
relayctl's local queue commands (relayctl --spool DIR queue ...) on a real
spool: list with its filters and states, show, summary, flush, hold,
release, delete and bounce, while nginx runs (the destination refuses, so
mail stays deferred) and while it is stopped; the notes they leave for the
workers; and the queue file's fixed-width "error" line.

Tests named test_hold_live_* need a running worker to leave held messages
alone and to pick released ones up again (the scheduler's side of "hold").

Sinks on 127.0.0.49 (other files use 127.0.0.2-48).  $RELAYCTL names the
binary (as controlharness finds it: next to controld).
"""

import fcntl
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

import controlharness as ch
import relayharness as h
import deliveryharness as dh


SINK_IP = "127.0.0.49"
RELAYCTL = ch.RELAYCTL


def tool(spool, *args, raw=False):
    env = dict(os.environ)
    env.pop("RELAYCTL_SPOOL", None)
    p = subprocess.run([RELAYCTL, "--spool", str(spool), "queue",
                        *map(str, args)], env=env, capture_output=True,
                       text=not raw, timeout=30)
    return ch.Run(p)


class Refuser:
    """RCPT replies of a sink: 451 to any address holding a refused
    marker; everything else is accepted."""

    def __init__(self):
        self.markers = set()
        self.lock = threading.Lock()

    def __call__(self, sess, txn, addr):
        with self.lock:
            if any(m in addr for m in self.markers):
                return "451 4.3.0 <%s>: queue tool test says later" % addr
        return None

    def refuse(self, *markers):
        with self.lock:
            self.markers.update(markers)

    def accept(self, *markers):
        with self.lock:
            self.markers.difference_update(markers)


def stream_lines(port):
    lines = [
        "relay_delivery on;",
        "relay_resolver 127.0.0.1:1;",
        "relay_queue_scan_interval 1s;",
        "relay_retry_backoff 1h 2h;",
        "relay_route qt.test [%s]:%d;" % (SINK_IP, port),
        "relay_route qt2.test [%s]:%d;" % (SINK_IP, port),
    ]
    return "\n".join("    " + l for l in lines)


@pytest.fixture(scope="module")
def base():
    """A directory of our own for the nginx prefixes, not under
    /tmp/pytest-of-root: a concurrent pytest run resets that to 0700, and
    the workers (nobody) then cannot make the Maildirs the DSNs go to."""
    d = Path(tempfile.mkdtemp(prefix="relay-queue-tool-"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def nginx(base, certs, name, port):
    h.require_module()
    prefix = h.make_prefix(base / name, certs)
    return h.launch_at(prefix, workers=2, stream_extra=stream_lines(port))


@pytest.fixture(scope="module")
def world(base, certs):
    if not os.access(RELAYCTL, os.X_OK):
        raise AssertionError("relayctl not found: %s (set RELAYCTL)"
                             % RELAYCTL)
    port = dh.alloc_port((SINK_IP,))
    refuser = Refuser()
    sink = dh.Sink(SINK_IP, port, "queue-tool-sink", rcpt_reply=refuser)
    sink.start()
    ng = nginx(base, certs, "live", port)
    yield ng, sink, refuser
    ng.stop()
    sink.stop()
    ng.assert_log_clean()


def send(ng, sender, rcpts, marker):
    with h.SMTPConn(ng.port("main")) as c:
        c.ehlo("queue-tool.test")
        qid = c.message(sender, rcpts, h.simple_body(marker, marker))
        c.cmd("QUIT")
    return qid


def deferred(ng, refuser, tag, sender, rcpts):
    """Queues a message whose remote recipients are refused (451) and
    waits until its first attempt was recorded in the queue file."""
    refuser.refuse(tag)
    qid = send(ng, sender, rcpts, tag)
    h.wait_until(lambda: dh.next_attempt(ng, qid), 15,
                 what="the first attempt of %s (%s)" % (qid, tag))
    return qid


def one_deferred(world, prefix):
    """(nginx, sink, refuser, tag, queue id) of a fresh deferred message
    from <prefix>-TAG@s.example to x-TAG@qt.test."""
    ng, sink, refuser = world
    tag = h.unique("q" + prefix)
    qid = deferred(ng, refuser, tag, "%s-%s@s.example" % (prefix, tag),
                   ["x-%s@qt.test" % tag])
    return ng, sink, refuser, tag, qid


def listed(spool, *filters):
    r = tool(spool, "list", "--json", *filters)
    assert r.rc == 0, r
    return {e["id"]: e for e in r.json()["entries"]}


def notes_with(spool, qid):
    d = Path(spool) / "notes"
    return [p for p in d.iterdir()
            if not p.name.startswith(".") and qid in p.read_text().split()]


# --------------------------------------------------------------------------
# nginx running, the destination refusing


def test_list_live_shows_states_and_filters(world):
    ng, sink, refuser = world
    tag = h.unique("ql")
    m1 = deferred(ng, refuser, tag, "a-%s@s.example" % tag,
                  ["r1-%s@qt.test" % tag])
    m2 = deferred(ng, refuser, tag, "",
                  ["r2-%s@qt2.test" % tag, "r3-%s@QT.test" % tag])
    m3 = deferred(ng, refuser, tag, "b-%s@s.example" % tag,
                  ["r4-%s@qt2.test" % tag, "r5-%s@example.test" % tag])
    ours = {m1, m2, m3}
    now = time.time()

    rows = listed(ng.spool)
    assert ours <= set(rows), rows.keys()
    e1, e2, e3 = rows[m1], rows[m2], rows[m3]
    assert e1["sender"] == "a-%s@s.example" % tag
    assert e1["pending"] == ["r1-%s@qt.test" % tag]
    assert e1["recipients"] == 1
    assert e2["sender"] == ""
    assert e2["pending"] == ["r2-%s@qt2.test" % tag, "r3-%s@QT.test" % tag]
    # the local recipient was delivered at once: done, not pending
    assert e3["pending"] == ["r4-%s@qt2.test" % tag]
    assert e3["recipients"] == 2
    assert [r["state"] for r in e3["rcpts"]] == ["P", "D"]
    for e in (e1, e2, e3):
        assert e["state"] == "deferred" and e["held"] is False, e
        assert e["attempts"] == 1, e
        assert e["next_attempt_unix"] > now + 3000, e
        assert "451" in e["last_error"] and "says later" in e["last_error"]
        assert e["size"] > 0 and 0 <= e["age_s"] < 120, e

    text = tool(ng.spool, "list")
    assert text.rc == 0, text
    row = [l for l in text.out.splitlines() if l.startswith(m1 + " ")]
    assert row and re.search(r"\sdeferred\s+<a-%s@s\.example>\s+1/1\s+"
                             r"r1-%s@qt\.test\s+in \S+\s+1\s+\S+\s+"
                             r"<r1-%s@qt\.test>"
                             % (tag, tag, tag), row[0]), text.out
    assert re.search(r"^\d+ messages?$", text.out.splitlines()[-1]), text

    def only(*filters):
        return ours & set(listed(ng.spool, *filters))

    assert only("--sender", "A-%s" % tag) == {m1}
    assert only("--sender", "<>") == {m2}
    assert only("--sender", "<a-%s@s.example>" % tag) == {m1}
    assert only("--sender", "<a-%s>" % tag) == set()
    assert only("--recipient", "r4-%s" % tag) == {m3}
    assert only("--recipient", "r5-%s" % tag) == set()     # done
    assert only("--domain", "qt2.test") == {m2, m3}
    assert only("--domain", "qt.test") == {m1, m2}
    assert only("--domain", ".test") == {m1, m2, m3}
    assert only("--state", "deferred") == ours
    assert only("--state", "new,held") == set()
    assert only("--state", "held", "--state", "active") == set()
    assert only("--older-than", "1h") == set()
    assert only("--younger-than", "1h") == ours
    assert only("--younger-than", "10m", "--sender", tag) == {m1, m3}

    bad = tool(ng.spool, "list", "--state", "frozen")
    assert bad.rc == 2 and "bad --state" in bad.err, bad

    for qid in ours:
        assert tool(ng.spool, "delete", qid).rc == 0


def test_show_live_prints_envelope_and_body(world):
    ng, sink, refuser, tag, qid = one_deferred(world, "s")
    body = h.simple_body(tag, tag)

    r = tool(ng.spool, "show", qid)
    assert r.rc == 0, r
    out = r.out
    assert "*** ENVELOPE RECORDS %s ***" % qid in out
    assert "state: deferred\n" in out
    assert "sender: <s-%s@s.example>\n" % tag in out
    assert "recipient: P <x-%s@qt.test> notify=- orcpt=-\n" % tag in out
    assert "attempts: 1\n" in out and "held: no\n" in out
    assert "client: 127.0.0.1\n" in out and "helo: queue-tool.test\n" in out
    assert re.search(r"last error: <x-%s@qt\.test> .*451" % tag, out), out
    head, _, rest = out.partition("*** MESSAGE CONTENTS %s ***\n" % qid)
    assert rest.endswith("*** END OF MESSAGE %s ***\n" % qid), out
    assert body.decode().replace("\r\n", "\n") in rest, out    # text mode

    # the message as stored: the Received: header, then what was sent
    raw = tool(ng.spool, "show", qid, "--body-only", raw=True)
    assert raw.rc == 0, raw
    _, _, _, stored = h.parse_queue_file(h.queue_file_for(ng, qid))
    assert raw.out == stored and raw.out.startswith(b"Received: from ")
    assert raw.out.endswith(body)

    hdr = tool(ng.spool, "show", qid, "--header-only")
    assert hdr.rc == 0 and "MESSAGE CONTENTS" not in hdr.out \
        and "sender: <s-%s@s.example>" % tag in hdr.out, hdr
    assert "body %s" % tag not in hdr.out

    gone = tool(ng.spool, "show", "NoSuchId")
    assert gone.rc == 6 and "NoSuchId: no such message" in gone.err, gone
    both = tool(ng.spool, "show", qid, "--header-only", "--body-only")
    assert both.rc == 2, both

    assert tool(ng.spool, "delete", qid).rc == 0


def test_summary_live_counts_per_domain_and_age(world):
    ng, sink, refuser = world
    tag = h.unique("qq")
    sender = "q-%s@s.example" % tag
    deferred(ng, refuser, tag, sender,
             ["a-%s@qt.test" % tag, "b-%s@qt.test" % tag])
    deferred(ng, refuser, tag, sender,
             ["c-%s@qt2.test" % tag, "d-%s@Qt.Test" % tag,
              "e-%s@example.test" % tag])

    r = tool(ng.spool, "--json", "summary", "--sender", tag)
    assert r.rc == 0, r
    j = r.json()
    assert j["bucket_minutes"] == [5, 10, 20, 40, 80, 160, 320, 640, 1280]
    rows = {row["domain"]: row for row in j["rows"]}
    assert j["rows"][0]["domain"] == "TOTAL"
    assert rows["TOTAL"]["total"] == 4, j
    assert rows["qt.test"]["total"] == 3 and rows["qt2.test"]["total"] == 1
    assert "example.test" not in rows              # delivered: not pending
    for row in rows.values():
        # minutes old at most: all in the first bucket
        assert row["buckets"][0] == row["total"], row
        assert sum(row["buckets"]) == row["total"] and \
            len(row["buckets"]) == 10, row
    assert [row["domain"] for row in j["rows"]] == \
        ["TOTAL", "qt.test", "qt2.test"]

    t = tool(ng.spool, "summary", "--sender", tag)
    assert t.rc == 0, t
    lines = t.out.splitlines()
    assert lines[0].split() == ["T", "5", "10", "20", "40", "80", "160",
                                "320", "640", "1280", "1280+"], t.out
    assert lines[1].split() == ["TOTAL", "4", "4"] + ["0"] * 9, t.out
    assert lines[2].split() == ["qt.test", "3", "3"] + ["0"] * 9, t.out
    assert lines[3].split() == ["qt2.test", "1", "1"] + ["0"] * 9, t.out

    old = tool(ng.spool, "--json", "summary", "--sender", tag,
               "--older-than", "1h")
    assert [row["total"] for row in old.json()["rows"]] == [0], old.out

    assert tool(ng.spool, "delete", "--all", "--sender", tag).rc == 0


def test_flush_live_retries_now_and_leaves_a_note(world):
    ng, sink, refuser, tag, qid = one_deferred(world, "f")
    assert dh.next_attempt(ng, qid)[0] > time.time() + 3000

    refuser.accept(tag)
    r = tool(ng.spool, "flush", qid)
    assert r.rc == 0, r
    assert r.out == "%s: flushed\nflushed 1 message\n" % qid, r
    assert notes_with(ng.spool, qid), list((ng.spool / "notes").iterdir())
    t = sink.wait_accepted(tag, timeout=15)[0]
    assert t.sender == "f-%s@s.example" % tag
    dh.wait_queue_gone(ng, qid, 10)

    gone = tool(ng.spool, "flush", qid, "NoSuchId")
    assert gone.rc == 6, gone
    assert "%s: no such message" % qid in gone.err
    assert "NoSuchId: no such message" in gone.err
    assert "flushed 0 messages" in gone.out


def test_delete_live_removes_without_delivery(world):
    ng, sink, refuser, tag, qid = one_deferred(world, "d")
    r = tool(ng.spool, "delete", qid)
    assert r.rc == 0 and "%s: deleted" % qid in r.out, r
    assert dh.queue_gone(ng, qid)
    refuser.accept(tag)
    again = tool(ng.spool, "delete", qid)
    assert again.rc == 6 and "no such message" in again.err, again
    usage = tool(ng.spool, "delete")
    assert usage.rc == 2 and "--all" in usage.err, usage
    # a later message to the same sink goes through; ours never came back
    tag2 = h.unique("qd")
    send(ng, "d2@s.example", ["y-%s@qt.test" % tag2], tag2)
    sink.wait_accepted(tag2, timeout=15)
    assert not sink.accepted(tag)


def test_bounce_live_sends_a_dsn(world):
    ng, sink, refuser = world
    tag = h.unique("qb")
    user = "snd-%s" % tag
    rcpt = "x-%s@qt.test" % tag
    qid = deferred(ng, refuser, tag, "%s@example.test" % user, [rcpt])
    r = tool(ng.spool, "bounce", qid)
    assert r.rc == 0, r
    assert "%s: bounced (1 recipient)" % qid in r.out
    (data, msg), = dh.wait_dsn(ng, user)
    _, blocks, _ = dh.dsn_parts(msg)
    blk = dh.recipient_block(blocks, rcpt)
    assert dh.field(blk, "Action").lower() == "failed"
    assert dh.field(blk, "Status") == "5.0.0"
    dh.wait_queue_gone(ng, qid, 10)
    assert dh.delivery_lines(ng, qid, rcpt, "bounced")
    assert not sink.accepted(tag)


def test_busy_live_message_is_left_alone(world):
    """A worker delivering a message holds its lock: taken here instead."""
    ng, sink, refuser, tag, qid = one_deferred(world, "k")
    path = h.queue_file_for(ng, qid)
    before = path.read_bytes()
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert set(listed(ng.spool, "--state", "active")) >= {qid}
        for action in ("hold", "release", "delete", "bounce"):
            r = tool(ng.spool, action, qid)
            assert r.rc == 7, (action, r)
            assert "%s: in delivery now, try again" % qid in r.err, r
        fl = tool(ng.spool, "flush", qid)
        assert fl.rc == 0 and "%s: in delivery now" % qid in fl.out, fl
        assert path.read_bytes() == before
    finally:
        os.close(fd)
    assert listed(ng.spool)[qid]["state"] == "deferred"
    assert tool(ng.spool, "delete", qid).rc == 0


def test_incomplete_file_listed_on_request_only(world):
    ng, sink, refuser, tag, qid = one_deferred(world, "i")
    data = h.queue_file_for(ng, qid).read_bytes()
    part = ng.queue_dir / ("QI%s" % tag)[:32]
    part.write_bytes(data[:len(data) // 2])     # no trailer
    try:
        assert part.name not in listed(ng.spool)
        inc = listed(ng.spool, "--state", "incomplete")
        assert inc[part.name]["state"] == "incomplete", inc
        assert inc[part.name]["file_size"] == len(data) // 2
        r = tool(ng.spool, "delete", part.name)
        assert r.rc == 7 and "incomplete" in r.err, r
        assert part.exists()
    finally:
        part.unlink(missing_ok=True)
    assert tool(ng.spool, "delete", qid).rc == 0


def test_hold_live_message_is_not_attempted(world):
    ng, sink, refuser, tag, qid = one_deferred(world, "h")
    ctl = h.unique("qc")
    c1 = deferred(ng, refuser, ctl, "c@s.example", ["c1-%s@qt.test" % ctl])
    c2 = deferred(ng, refuser, ctl, "c@s.example", ["c2-%s@qt.test" % ctl])

    r = tool(ng.spool, "hold", qid)
    assert r.rc == 0 and r.out == "%s: held\nheld 1 message\n" % qid, r
    assert notes_with(ng.spool, qid)
    e = listed(ng.spool)[qid]
    assert e["state"] == "held" and e["held"] is True, e
    text = tool(ng.spool, "list", "--state", "held")
    assert re.search(r"^%s .*\sheld\s+<h-.*\sheld\s+1\s" % qid, text.out,
                     re.M), text.out
    again = tool(ng.spool, "hold", qid)
    assert again.rc == 1 and "%s: not held: already held" % qid \
        in again.out, again

    # the destination accepts now, and the held message is due: flushing
    # keeps the hold; two flushed messages delivered mean the workers had
    # their chance (twice) to attempt it
    tried = len(sink.all_txns(tag))
    refuser.accept(tag, ctl)
    assert tool(ng.spool, "flush", qid, c1).rc == 0
    sink.wait_accepted("c1-" + ctl, timeout=15)
    assert tool(ng.spool, "flush", c2).rc == 0
    sink.wait_accepted("c2-" + ctl, timeout=15)
    assert len(sink.all_txns(tag)) == tried and not sink.accepted(tag), \
        "a held message was attempted"
    assert listed(ng.spool)[qid]["state"] == "held"
    assert h.queue_file_for(ng, qid)


def test_hold_live_release_delivers(world):
    ng, sink, refuser, tag, qid = one_deferred(world, "r")
    assert tool(ng.spool, "hold", qid).rc == 0
    refuser.accept(tag)
    r = tool(ng.spool, "release", qid)
    assert r.rc == 0 and "%s: released" % qid in r.out, r
    nxt, _ = dh.next_attempt(ng, qid) or (None, None)
    assert nxt is None or nxt <= time.time() + 1
    sink.wait_accepted(tag, timeout=15)
    dh.wait_queue_gone(ng, qid, 10)
    nh = tool(ng.spool, "release", "--all", "--sender", "r-%s" % tag)
    assert nh.rc == 1 and "no message matches" in nh.out, nh


def test_error_line_is_fixed_width(world):
    ng, sink, refuser, tag, qid = one_deferred(world, "e")
    head = h.queue_index(ng)[qid][0].read_bytes().split(b"\n\n", 1)[0]
    err = [l for l in head.split(b"\n") if l.startswith(b"error ")][0]
    assert len(err) == 6 + 200, len(err)
    assert err.startswith(b"error <x-%s@qt.test> " % tag.encode())
    hold = [l for l in head.split(b"\n") if l.startswith(b"hold ")]
    assert hold == [b"hold 0"], head
    assert tool(ng.spool, "delete", qid).rc == 0


def test_usage_and_not_a_spool(world, tmp_path):
    ng, _, _ = world
    r = tool(tmp_path, "list")
    assert r.rc == 3 and "not a spool" in r.err, r
    r = tool(tmp_path / "nonexistent", "list")
    assert r.rc == 3, r
    assert tool(ng.spool, "frob").rc == 2
    assert tool(ng.spool, "hold").rc == 2
    assert tool(ng.spool, "hold", "X", "--all").rc == 2
    assert tool(ng.spool, "hold", "X", "--sender", "y").rc == 2
    assert tool(ng.spool, "list", "--node", "n1").rc == 2
    assert tool(ng.spool, "list", "--older-than", "3x").rc == 2
    assert tool(ng.spool, "show").rc == 2

    # RELAYCTL_SPOOL is the default for --spool
    env = dict(os.environ, RELAYCTL_SPOOL=str(ng.spool))
    p = subprocess.run([RELAYCTL, "queue", "list", "--json"], env=env,
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0 and "entries" in json.loads(p.stdout), p


# --------------------------------------------------------------------------
# nginx stopped: every command on the spool alone


def test_stopped_spool_every_command(base, certs):
    port = dh.alloc_port((SINK_IP,))
    refuser = Refuser()
    sink = dh.Sink(SINK_IP, port, "queue-tool-stopped", rcpt_reply=refuser)
    sink.start()
    ng = None
    try:
        ng = nginx(base, certs, "stopped", port)
        _stopped_spool(ng, sink, refuser)
    finally:
        sink.stop()
        if ng is not None:
            ng.stop()
            ng.assert_log_clean()


def _stopped_spool(ng, sink, refuser):
    tag = h.unique("qz")
    user = "bz-%s" % tag
    msgs = {}
    for kind in ("hold", "flush", "delete", "bounce", "keep"):
        sender = ("%s@example.test" % user if kind == "bounce"
                  else "%s-%s@s.example" % (kind, tag))
        msgs[kind] = deferred(ng, refuser, tag, sender,
                              ["%s-%s@qt.test" % (kind, tag)])
    ng.stop()

    rows = listed(ng.spool, "--sender", tag)
    assert set(rows) >= set(msgs.values()), rows
    assert {rows[q]["state"] for q in msgs.values()} == {"deferred"}
    assert not listed(ng.spool, "--state", "active")

    show = tool(ng.spool, "show", msgs["flush"])
    assert show.rc == 0 and "body %s" % tag in show.out, show

    summ = tool(ng.spool, "--json", "summary", "--sender", tag).json()
    assert summ["rows"][0] == {"domain": "TOTAL", "total": 5,
                               "buckets": [5] + [0] * 9}, summ

    notes_before = set((ng.spool / "notes").iterdir())
    for kind in ("hold", "flush", "delete", "bounce"):
        r = tool(ng.spool, kind, msgs[kind])
        assert r.rc == 0, (kind, r)
    notes = set((ng.spool / "notes").iterdir()) - notes_before
    assert len(notes) == 4, notes
    for kind in ("hold", "flush", "delete", "bounce"):
        assert notes_with(ng.spool, msgs[kind]), kind
    for n in notes:
        assert re.match(r"^\d{10}\.\d+\.\d+$", n.name), n.name

    assert set(listed(ng.spool, "--state", "held")) == {msgs["hold"]}
    assert msgs["delete"] not in listed(ng.spool)

    # held and due: a flush keeps the hold
    fl = tool(ng.spool, "flush", msgs["hold"])
    assert fl.rc == 0, fl
    e = listed(ng.spool)[msgs["hold"]]
    assert e["held"] and e["next_attempt_unix"] <= time.time(), e

    # start again, the destination accepting: the flushed one goes at the
    # first scan, the bounce makes a DSN; the held one waits
    tried = len(sink.all_txns("hold-" + tag))
    refuser.accept(tag)
    ng.start()
    sink.wait_accepted("flush-" + tag, timeout=15)
    dh.wait_dsn(ng, user)
    dh.wait_queue_gone(ng, msgs["flush"], 10)
    dh.wait_queue_gone(ng, msgs["bounce"], 10)
    assert not sink.accepted("delete-" + tag)
    assert not sink.accepted("bounce-" + tag)
    assert dh.queue_gone(ng, msgs["delete"])

    # a second flushed message delivered: the held one had its chances
    assert tool(ng.spool, "flush", msgs["keep"]).rc == 0
    sink.wait_accepted("keep-" + tag, timeout=15)
    assert len(sink.all_txns("hold-" + tag)) == tried
    e = listed(ng.spool)[msgs["hold"]]
    assert e["state"] == "held" and e["held"], e

    assert tool(ng.spool, "release", msgs["hold"]).rc == 0
    sink.wait_accepted("hold-" + tag, timeout=15)
    dh.wait_queue_gone(ng, msgs["hold"], 10)
