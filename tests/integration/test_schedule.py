"""
The in-memory schedule: retries start on their due time (not at the next
queue scan), an unreachable destination gets a bounded number of
connections however much mail waits for it, the schedule is rebuilt after
kill -9 and handed over when a worker dies or the worker count changes
(nothing lost, nothing delivered twice), a restart takes what a schedule
snapshot still describes instead of reading each header (and reads the
files that changed since), and a queue file nobody announced is found by
the safety-net scan.

Sinks on 127.0.0.50-54 (other files use 127.0.0.2-49).
"""

import os
import re
import struct
import subprocess
import threading
import time

import pytest

import relayharness as h
import deliveryharness as dh
import controlharness as ch


DUE_IP = "127.0.0.50"
DEAD_IP = "127.0.0.51"
SHARE_IP = "127.0.0.52"
SNAP_IP = "127.0.0.54"


def _send(ng, sender, rcpts_bodies):
    """One session, one transaction per (rcpts, body); the queue ids."""
    c = h.SMTPConn(ng.port("main"))
    c.ehlo()
    ids = [c.message(sender, rcpts, body) for rcpts, body in rcpts_bodies]
    c.close()
    return ids


def _next_attempt(ng, qid):
    """The 'next' time written in a queue file, or None."""
    files = h.queue_index(ng).get(qid)
    if not files:
        return None
    head = files[0].read_bytes().split(b"\n\n", 1)[0]
    for line in head.split(b"\n"):
        if line.startswith(b"next "):
            return int(line.split()[1])
    return None


# -------------------------------------------------------------- due times


def _world(tmp_path_factory, certs, name, ip, domain, backoff, extra=(),
           **hooks):
    """A relay of 2 workers, retries every `backoff`, a scan interval of an
    hour (only the schedule retries), `domain` routed to a sink on ip with
    the given reply hooks; returns (nginx, sink)."""
    port = dh.alloc_port((ip,))
    sink = dh.Sink(ip, port, name + "-sink", **hooks)
    sink.start()
    lines = [
        "relay_delivery on;",
        "relay_resolver 127.0.0.1:1;",
        "relay_queue_scan_interval 1h;",
        "relay_retry_backoff %s %s;" % (backoff, backoff),
        "relay_route %s [%s]:%d;" % (domain, ip, port),
    ] + list(extra)
    ng = h.launch(tmp_path_factory, certs, "sched-" + name, workers=2,
                  stream_extra="\n".join("    " + l for l in lines))
    return ng, sink


@pytest.fixture(scope="module")
def due_world(tmp_path_factory, certs):
    seen = {}                     # tag -> [wall time of each RCPT]
    lock = threading.Lock()

    def rcpt(sess, txn, addr):
        tag = addr.split("@")[0]
        with lock:
            times = seen.setdefault(tag, [])
            times.append(time.time())
            first = len(times) == 1
        if first:
            return "451 4.3.0 <%s>: try again in three seconds" % addr
        return None

    ng, sink = _world(tmp_path_factory, certs, "due", DUE_IP, "due.test",
                      "3s", rcpt_reply=rcpt)
    yield ng, sink, seen, lock
    ng.stop()
    sink.stop()
    ng.assert_log_clean()


def test_retry_starts_within_a_second_of_its_due_time(due_world):
    ng, sink, seen, lock = due_world
    tags = [h.unique("due%d-" % i) for i in range(6)]
    ids = _send(ng, "s@example.org",
                [(["%s@due.test" % t], h.simple_body(t)) for t in tags])

    due = {}
    for qid, tag in zip(ids, tags):
        h.wait_until(lambda: len(seen.get(tag, ())) >= 1, 10,
                     what="first attempt of %s" % tag)
        h.wait_until(lambda: (_next_attempt(ng, qid) or 0) > 0, 10,
                     what="the deferral of %s on disk" % qid)
        due[tag] = _next_attempt(ng, qid)

    for qid, tag in zip(ids, tags):
        sink.wait_accepted(tag, timeout=15)
        with lock:
            second = seen[tag][1]
        # the scan interval is an hour: only the schedule can do this
        print("%s: due %d, retried %.3f" % (tag, due[tag], second))
        assert due[tag] - 0.05 <= second <= due[tag] + 1.0, \
            "%s: due at %d, retried at %.3f" % (tag, due[tag], second)
        dh.wait_queue_gone(ng, qid)


# ------------------------------------------------------- dead destination


@pytest.fixture(scope="module")
def dead_world(tmp_path_factory, certs):
    dead = threading.Event()
    dead.set()

    def greeting(sess, txn, arg):
        return "421 4.3.2 dead-sink is down for maintenance" \
            if dead.is_set() else None

    ng, sink = _world(tmp_path_factory, certs, "dead", DEAD_IP, "dead.test",
                      "2s", greeting=greeting)
    yield ng, sink, dead
    ng.stop()
    sink.stop()
    ng.assert_log_clean()


def test_unreachable_destination_gets_a_bounded_number_of_connections(
        dead_world):
    ng, sink, dead = dead_world
    n = 200
    tags = [h.unique("dead%d-" % i) for i in range(n)]
    start = time.monotonic()
    ids = _send(ng, "s@example.org",
                [(["%s@dead.test" % t], h.simple_body(t)) for t in tags])

    # every message has been deferred once (tried, or suspended)
    h.wait_until(lambda: all(dh.delivery_lines(ng, qid, status="deferred")
                             for qid in ids), 30,
                 what="a deferral of every message")
    h.wait_until(lambda: "relay destination dead.test is unreachable"
                 in ng.error_log(), 10, what="the destination marked")

    # four more retry rounds (2 s each) while it stays dead
    time.sleep(8)
    rounds = (time.monotonic() - start) / 2.0
    connections = sink.connections
    log = ng.error_log()
    suspended = log.count("delivery temporarily suspended")
    print("dead destination: %d connections, %d suspended deferrals, "
          "%.1f rounds" % (connections, suspended, rounds))

    # per worker: the attempts in flight when it first failed, then one
    # probe per round; never one connection per message per round
    assert connections <= 2 * 16 + 2 * (rounds + 1), \
        "%d connections for %d messages in %.1f rounds" \
        % (connections, n, rounds)
    assert connections < n // 2, connections
    assert suspended > 0, "no deferral was suspended"

    # the destination comes back: a probe finds it, everything goes
    dead.clear()
    for t in tags:
        sink.wait_accepted(t, timeout=30)
    for qid in ids:
        dh.wait_queue_gone(ng, qid, timeout=15)
    assert "relay destination dead.test is reachable again" \
        in ng.error_log()
    for t in tags:
        assert len(sink.accepted(t)) == 1, t


# --------------------------------------- rebuild, worker death, new shares


def _refusing_world(tmp_path_factory, certs, name, ip, backoff, extra=()):
    """A world for share.test whose sink answers 451 to every recipient
    while the returned event is set; yields (nginx, sink, event)."""
    refuse = threading.Event()
    refuse.set()

    def rcpt(sess, txn, addr):
        if refuse.is_set():
            return "451 4.3.0 <%s>: not yet" % addr
        return None

    ng, sink = _world(tmp_path_factory, certs, name, ip, "share.test",
                      backoff, extra=extra, rcpt_reply=rcpt)
    yield ng, sink, refuse
    ng.stop()
    sink.stop()


@pytest.fixture
def share_world(tmp_path_factory, certs):
    yield from _refusing_world(tmp_path_factory, certs, "share", SHARE_IP,
                               "2s")


def _queue_deferred(ng, sink, n, prefix):
    tags = [h.unique(prefix + "%d-" % i) for i in range(n)]
    ids = _send(ng, "s@example.org",
                [(["%s@share.test" % t], h.simple_body(t)) for t in tags])
    h.wait_until(lambda: all(dh.delivery_lines(ng, qid, status="deferred")
                             for qid in ids), 20,
                 what="a deferral of every message")
    return tags, ids


def _all_delivered_once(ng, sink, tags, ids):
    for t in tags:
        sink.wait_accepted(t, timeout=30)
    for qid in ids:
        dh.wait_queue_gone(ng, qid, timeout=15)
    for t in tags:
        assert len(sink.accepted(t)) == 1, \
            "%s delivered %d times" % (t, len(sink.accepted(t)))


def test_kill9_of_everything_rebuilds_the_schedule(share_world):
    ng, sink, refuse = share_world
    tags, ids = _queue_deferred(ng, sink, 40, "k9-")

    ng.kill9()
    refuse.clear()
    ng.start()

    h.wait_until(lambda: len(re.findall(
        r"relay queue: \d+ message\(s\) of this worker's share scheduled",
        ng.error_log())) >= 4, 15, what="both new workers' rebuild")
    _all_delivered_once(ng, sink, tags, ids)


def test_kill9_while_deferrals_are_recorded(share_world):
    ng, sink, refuse = share_world
    tags = [h.unique("mid%d-" % i) for i in range(60)]
    ids = _send(ng, "s@example.org",
                [(["%s@share.test" % t], h.simple_body(t)) for t in tags])

    # in the middle of the first round of deferrals
    h.wait_until(lambda: len(ng.error_log().split("status=deferred")) > 10,
                 10, what="deferrals under way")
    ng.kill9()
    refuse.clear()
    ng.start()
    _all_delivered_once(ng, sink, tags, ids)


def test_a_dead_workers_share_is_taken_over(share_world):
    ng, sink, refuse = share_world
    tags, ids = _queue_deferred(ng, sink, 40, "wd-")

    victim = ng.worker_pids()[0]
    mark = ng.log_mark()
    os.kill(victim, 9)
    h.wait_until(lambda: victim not in ng.worker_pids()
                 and len(ng.worker_pids()) == 2, 10,
                 what="a new worker in place of %d" % victim)
    refuse.clear()
    _all_delivered_once(ng, sink, tags, ids)
    ng.assert_no_crash(mark)


def test_a_new_worker_count_redistributes_the_shares(share_world):
    ng, sink, refuse = share_world
    tags, ids = _queue_deferred(ng, sink, 40, "wc-")

    old = set(ng.worker_pids())
    ng.write_conf(workers=3)
    ng.reload()
    h.wait_until(lambda: len(set(ng.worker_pids()) - old) == 3
                 and not (set(ng.worker_pids()) & old), 15,
                 what="three new workers")
    refuse.clear()
    _all_delivered_once(ng, sink, tags, ids)


# -------------------------------------------------------------- snapshots


@pytest.fixture
def snap_world(tmp_path_factory, certs):
    yield from _refusing_world(tmp_path_factory, certs, "snap", SNAP_IP,
                               "8s", ["relay_queue_snapshot_interval 1s;"])


def _snapshot_records(ng):
    """{queue id: (ino, ctime ns, flags, [domains])} of the schedule
    snapshots in the spool, read as ngx_relay_snapshot.c writes them."""
    records = {}
    for path in sorted((ng.spool / "schedule").glob("[0-9]*")):
        data = path.read_bytes()
        assert data[:8] == b"RLYSNAP1", path
        _, slices, count = struct.unpack_from("<IIQ", data, 8)
        p, seen = 32, 0
        for _ in range(slices):
            length, _crc = struct.unpack_from("<II", data, p)
            p += 8
            end = p + length
            while p < end:
                n = data[p]
                qid = data[p + 1:p + 1 + n].decode()
                p += 1 + n
                ino, ctime, _arrival, _pending, flags, ndom = \
                    struct.unpack_from("<QqqIBB", data, p)
                p += 30
                domains = []
                for _ in range(ndom):
                    domains.append(data[p + 1:p + 1 + data[p]].decode())
                    p += 1 + data[p]
                records[qid] = (ino, ctime, flags, domains)
                seen += 1
        assert seen == count, "%s: %d records, header says %d" % (
            path, seen, count)
    return records


def _snapshot_holds(ng, ids):
    """Waits until the snapshots name every id with its file's version."""
    def holds():
        recs = _snapshot_records(ng)
        files = h.queue_index(ng)
        for qid in ids:
            st = os.stat(files[qid][0])
            if recs.get(qid, (None, None))[:2] != (st.st_ino,
                                                   st.st_ctime_ns):
                return False
        return True
    h.wait_until(holds, 20, what="a snapshot describing every message")


def _rebuilt(ng, mark):
    """(messages, from the snapshot) summed over the workers' rebuild lines
    logged after mark; waits for both workers."""
    pat = (r"relay queue: (\d+) message\(s\) of this worker's share "
           r"scheduled in \d+ ms, (\d+) from the snapshot")

    def lines():
        return re.findall(pat, ng.error_log()[mark:])
    h.wait_until(lambda: len(lines()) >= 2, 20, what="both workers' rebuild")
    found = lines()
    return (sum(int(m) for m, _ in found), sum(int(k) for _, k in found))


def test_restart_takes_the_schedule_from_the_snapshot(snap_world):
    ng, sink, refuse = snap_world
    tags, ids = _queue_deferred(ng, sink, 30, "sn-")
    _snapshot_holds(ng, ids)

    recs = _snapshot_records(ng)
    for qid in ids:
        assert recs[qid][3] == ["share.test"], recs[qid]
        assert recs[qid][2] & 0x08, "tried flag missing: %r" % (recs[qid],)

    ng.kill9()
    mark = len(ng.error_log())
    refuse.clear()
    ng.start()

    # nothing flushes them: each is tried when its file says it is due
    assert _rebuilt(ng, mark) == (30, 30)
    _all_delivered_once(ng, sink, tags, ids)


def test_a_file_changed_since_the_snapshot_is_read_again(snap_world):
    ng, sink, refuse = snap_world
    tags, ids = _queue_deferred(ng, sink, 10, "sc-")
    _snapshot_holds(ng, ids)
    ng.kill9()

    # held while nginx is down; without the note, only the file's change
    # time tells the new workers that the record is stale
    r = subprocess.run([ch.RELAYCTL, "--spool", str(ng.spool), "queue",
                        "hold", ids[0]], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    for note in (ng.spool / "notes").iterdir():
        note.unlink()

    mark = len(ng.error_log())
    refuse.clear()
    ng.start()

    assert _rebuilt(ng, mark) == (10, 9)
    _all_delivered_once(ng, sink, tags[1:], ids[1:])
    assert sink.accepted(tags[0]) == []
    assert h.queue_index(ng).get(ids[0]), "the held message is gone"


def test_a_damaged_snapshot_costs_only_the_reads(snap_world):
    ng, sink, refuse = snap_world
    tags, ids = _queue_deferred(ng, sink, 10, "sd-")
    _snapshot_holds(ng, ids)
    ng.kill9()

    for path in (ng.spool / "schedule").glob("[0-9]*"):
        data = bytearray(path.read_bytes())
        for i in range(40, len(data), 7):
            data[i] ^= 0x5a
        path.write_bytes(bytes(data))

    mark = len(ng.error_log())
    refuse.clear()
    ng.start()

    assert _rebuilt(ng, mark) == (10, 0)
    _all_delivered_once(ng, sink, tags, ids)


def test_a_file_nobody_announced_is_found_by_the_safety_net(
        tmp_path_factory, certs):
    lines = ["relay_queue_scan_interval 2s;"]
    ng = h.launch(tmp_path_factory, certs, "sched-net", workers=2,
                  stream_extra="\n".join("    " + l for l in lines))
    try:
        tag = h.unique("net")
        _send(ng, "s@example.org",
              [(["%s@example.test" % tag], h.simple_body(tag))])
        h.wait_delivered(ng, "example.test", tag, timeout=10)

        # a queue file put in place by hand, no note: the scan finds it
        tag2 = h.unique("net")
        src = _write_queue_file(ng, tag2)
        h.wait_delivered(ng, "example.test", tag2, timeout=10)
        assert not src.exists()
    finally:
        ng.stop()


def _write_queue_file(ng, new_tag):
    """Writes a queue file for new_tag@example.test by hand (the format of
    the module's own files) and returns its path."""
    body = h.simple_body(new_tag)
    qid = "00000001000P1S%x" % (int(time.time() * 1000) & 0xffffff)
    head = ("RELAY-QUEUE 1\nid %s\narrival %d\nclient 127.0.0.1\n"
            "helo hand.test\nauth -\nbody 7BIT\nsmtputf8 0\nret -\n"
            "envid -\nsender s@example.org\nnext 0000000000 0000\n"
            "delay-warned 0\nhold 0\nerror %s\nrcpt P - - %s@example.test\n\n"
            % (qid, int(time.time()), " " * 200, new_tag)).encode()
    data = head + body
    trailer = ("\nRELAY-END %020d\n" % len(data)).encode()
    path = ng.queue_dir / qid
    tmp = ng.prefix / ("hand-" + qid)
    tmp.write_bytes(data + trailer)
    os.chmod(tmp, 0o666)
    os.rename(tmp, path)
    return path


def test_mail_an_exiting_worker_takes_goes_to_the_next_generation(
        share_world):
    ng, sink, refuse = share_world
    refuse.clear()
    c = h.SMTPConn(ng.port("main"))
    c.ehlo()
    old = set(ng.worker_pids())
    ng.reload()
    h.wait_until(lambda: len(set(ng.worker_pids()) - old) >= 2, 10,
                 what="new workers")

    # this session stays with its old, exiting worker
    tag = h.unique("handover")
    qid = c.message("s@example.org", ["%s@share.test" % tag],
                    h.simple_body(tag))
    sink.wait_accepted(tag, timeout=10)
    dh.wait_queue_gone(ng, qid, timeout=10)
    assert set(ng.worker_pids()) & old, "the old worker is gone already"
    c.expect("QUIT", 221, "2.0.0")
    c.close()
    h.wait_until(lambda: not (set(ng.worker_pids()) & old), 15,
                 what="the old workers to exit")
    assert len(sink.accepted(tag)) == 1


def test_a_queue_file_that_does_not_parse_goes_to_corrupt(
        tmp_path_factory, certs):
    ng = h.launch(tmp_path_factory, certs, "sched-corrupt", workers=2,
                  stream_extra="    relay_queue_scan_interval 1s;")
    try:
        # complete (its trailer is right) but not a queue file
        data = b"NOT-A-QUEUE-FILE\nhello\n\n"
        trailer = ("\nRELAY-END %020d\n" % len(data)).encode()
        qid = "00000002000P1S%x" % (int(time.time() * 1000) & 0xffffff)
        tmp = ng.prefix / ("hand-" + qid)
        tmp.write_bytes(data + trailer)
        os.chmod(tmp, 0o666)
        os.rename(tmp, ng.queue_dir / qid)

        moved = ng.spool / "corrupt" / qid
        h.wait_until(moved.exists, 10, what="%s moved to corrupt/" % qid)
        assert not (ng.queue_dir / qid).exists()
        h.wait_until(lambda: "%s: the queue file does not parse" % qid
                     in ng.error_log(), 5, what="the crit line")
    finally:
        ng.stop()
