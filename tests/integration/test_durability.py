"""
Durability: "250 means durable", nothing lost, nothing delivered twice.
  (a) kill -9 of the master and the workers during a burst from several
      concurrent clients; restart on the same prefix;
  (b) nginx -s reload while a session is mid-DATA, with a burst of local
      mail around it;
  (c) restart with a different worker_processes (and with a new local
      domain: the schedule is rebuilt from disk).
Each test runs its own nginx; the teardown checks error.log.
"""

import os
import signal
import smtplib
import threading

import relayharness as h


def burst_client(port, n, count, rcpt_fmt, acked, lock, errors):
    try:
        s = smtplib.SMTP(h.HOST, port, "burst%d.test" % n, timeout=10)
    except OSError as e:
        errors.append(repr(e))
        return
    try:
        s.ehlo()
        for i in range(count):
            tag = "burst-%d-%d" % (n, i)
            code, _ = s.mail("burst@example.org")
            if code != 250:
                errors.append((tag, "MAIL", code))
                return
            code, _ = s.rcpt(rcpt_fmt % tag)
            if code != 250:
                errors.append((tag, "RCPT", code))
                return
            code, msg = s.data(h.simple_body(tag))
            if code != 250:
                errors.append((tag, "DATA", code, msg))
                return
            m = h.QUEUED_RE.search(msg.decode())
            with lock:
                acked.append((m.group(1) if m else None, tag))
    except (smtplib.SMTPException, OSError):
        pass                     # the server died under us: expected
    finally:
        try:
            s.close()
        except OSError:
            pass


def test_kill9_during_burst(fresh):
    # short scan interval: partial files of killed sessions are removed by
    # the queue scan (once 10 s old) instead of after a minute
    ng = fresh(stream_extra="    relay_queue_scan_interval 2s;")
    acked, lock, errors = [], threading.Lock(), []
    threads = [threading.Thread(
        target=burst_client,
        args=(ng.port("main"), n, 25, "%s@remote.example", acked, lock,
              errors), daemon=True) for n in range(8)]
    for t in threads:
        t.start()
    h.wait_until(lambda: len(acked) >= 60 or
                 not any(t.is_alive() for t in threads), 60, interval=0.005,
                 what="60 messages acknowledged")
    ng.kill9()
    for t in threads:
        t.join(15)
    assert not errors, errors[:5]
    assert acked and all(qid for qid, _ in acked), acked[:5]
    n_acked = len(acked)
    print("kill -9 after %d of 200 messages acknowledged" % n_acked)

    def check(crashed=False):
        # right after the crash a new message's file may still be hollow
        # (its first attempt had not ended): its journal record holds it
        idx = h.queue_index(ng)
        records = h.journaled(ng) if crashed else {}
        hollow = {p.name: p for p in h.incomplete_queue_files(ng)
                  if p.name in records}
        for q in hollow:
            idx.setdefault(q, [hollow[q]])
        lost = [(q, t) for q, t in acked if q not in idx]
        assert not lost, "%d of %d acknowledged messages lost: %r" \
            % (len(lost), n_acked, lost[:5])
        for q, t in acked:
            assert len(idx[q]) == 1, (q, idx[q])
            data = idx[q][0].read_bytes()
            if q in hollow:
                data = records[q]
            assert t.encode() in data, \
                "queue file %s does not hold %s" % (idx[q][0], t)

    ids = [q for q, _ in acked]
    assert len(set(ids)) == len(ids), "queue ids reused"
    check(crashed=True)          # on disk right after the crash
    ng.start()
    h.wait_until(lambda: not h.incoming_files(ng), 10,
                 what="spool/incoming/ emptied after restart: %s"
                 % h.incoming_files(ng)[:5])
    check()
    h.wait_until(lambda: not h.incomplete_queue_files(ng), 20, interval=0.5,
                 what="partial queue files of killed sessions removed: %s"
                 % h.incomplete_queue_files(ng)[:5])
    check()
    for q, _ in acked[:10]:
        first, kv, rcpts, msg = h.parse_queue_file(h.queue_index(ng)[q][0])
        assert first == "RELAY-QUEUE 1" and rcpts[0]["state"] == "P", rcpts
    # and the restarted relay works
    with h.SMTPConn(ng.port("main")) as c:
        q = c.message("a@example.org", ["after-crash@example.test"],
                      h.simple_body("after-crash"), ehlo="c.test")
    assert q not in ids, "queue id %s reused after restart" % q
    h.wait_delivered(ng, "example.test", "after-crash")


def test_kill9_local_delivery_not_lost(fresh):
    ng = fresh()
    acked, lock, errors = [], threading.Lock(), []
    threads = [threading.Thread(
        target=burst_client,
        args=(ng.port("main"), n, 15, "%s@example.test", acked, lock,
              errors), daemon=True) for n in range(4)]
    for t in threads:
        t.start()
    h.wait_until(lambda: len(acked) >= 20 or
                 not any(t.is_alive() for t in threads), 60, interval=0.005,
                 what="20 messages acknowledged")
    ng.kill9()
    for t in threads:
        t.join(15)
    assert not errors, errors[:5]
    ng.start()
    for q, tag in acked:
        h.wait_delivered(ng, "example.test", tag, timeout=20)
    h.wait_until(lambda: not any(q in h.queue_index(ng) for q, _ in acked),
                 20, what="acknowledged local messages to leave the queue")
    for q, tag in acked:
        files = h.mailbox_files(ng, "example.test", tag)
        assert len(files) == 1, "%s delivered %d times" % (tag, len(files))
        assert h.all_files(ng.maildir / "example.test" / tag / "tmp") == []


def test_reload_mid_data(fresh):
    ng = fresh()
    tag = h.unique("reload")
    body = h.simple_body(tag) + b"second half of the message\r\n"
    wire = h.dot_stuff(body)

    c = h.SMTPConn(ng.port("main"))
    c.ehlo("mid.data.test")
    c.expect("MAIL FROM:<r@example.org>", 250, "2.1.0")
    c.expect("RCPT TO:<%s@example.test>" % tag, 250, "2.1.5")
    c.expect("DATA", 354)
    c.send(wire[:len(wire) // 2])

    acked, lock, errors = [], threading.Lock(), []
    t = threading.Thread(target=_one_per_connection,
                         args=(ng.port("main"), tag, 30, acked, lock, errors),
                         daemon=True)
    t.start()
    h.wait_until(lambda: len(acked) >= 5, 20, what="burst started")

    old = set(ng.worker_pids())
    ng.reload()
    h.wait_until(lambda: len(set(ng.worker_pids()) - old) >= ng.workers, 10,
                 what="new workers after reload")

    c.send(wire[len(wire) // 2:] + b".\r\n")
    r = c.reply()
    assert r.is_(250, "2.0.0") and r.queue_id, r
    c.expect("QUIT", 221, "2.0.0")
    c.close()
    t.join(60)
    assert not t.is_alive()
    assert not errors, errors[:5]
    assert len(acked) == 30

    # the old workers finish their sessions and exit
    h.wait_until(lambda: not (set(ng.worker_pids()) & old), 15,
                 what="old workers to exit after reload")

    users = [tag] + [u for _, u in acked]
    for u in users:
        h.wait_delivered(ng, "example.test", u, timeout=20)
    h.wait_until(lambda: not h.queue_files(ng), 20,
                 what="queue to empty: %s" % h.queue_files(ng)[:5])
    for u in users:
        files = h.mailbox_files(ng, "example.test", u)
        assert len(files) == 1, "%s delivered %d times" % (u, len(files))
    f = h.mailbox_files(ng, "example.test", tag)[0]
    assert h.split_delivered(f.read_bytes())[3] == body


def _one_per_connection(port, tag, count, acked, lock, errors):
    """count messages, a new connection each.  Only connecting may be
    retried (a listener closing during a reload); a session dropped after
    its greeting is an error: a retry could duplicate a message."""
    for i in range(count):
        user = "%s-burst%d" % (tag, i)
        s = None
        for attempt in range(3):
            try:
                s = smtplib.SMTP(h.HOST, port, "b.test", timeout=10)
                break
            except (smtplib.SMTPServerDisconnected, ConnectionError) as e:
                if attempt == 2:
                    errors.append((user, "connect", repr(e)))
                    return
        try:
            s.ehlo()
            s.mail("b@example.org")
            s.rcpt(user + "@example.test")
            code, msg = s.data(h.simple_body(user))
            if code != 250:
                errors.append((user, code, msg))
                return
            with lock:
                acked.append((h.QUEUED_RE.search(msg.decode()).group(1),
                              user))
            s.quit()
        except (smtplib.SMTPException, OSError) as e:
            errors.append((user, "session dropped", repr(e)))
            return
        finally:
            s.close()


def test_worker_count_change(fresh):
    ng = fresh(workers=2)
    tag = h.unique("wc")
    remote, local = {}, {}
    with h.SMTPConn(ng.port("main")) as c:
        c.ehlo("wc.test")
        for i in range(15):
            t = "%s-r%d" % (tag, i)
            remote[c.message("a@example.org", [t + "@remote.example"],
                             h.simple_body(t))] = t
            t = "%s-l%d" % (tag, i)
            local[c.message("a@example.org", [t + "@example.test"],
                            h.simple_body(t))] = t
    for t in local.values():
        h.wait_delivered(ng, "example.test", t)

    def check():
        idx = h.queue_index(ng)
        for q, t in remote.items():
            assert len(idx.get(q, [])) == 1, (q, t, idx.get(q))
        for q, t in local.items():
            files = h.mailbox_files(ng, "example.test", t)
            assert len(files) == 1, "%s delivered %d times" % (t, len(files))
        assert len(h.queue_files(ng)) == len(remote), h.queue_files(ng)

    h.wait_until(lambda: len(h.queue_files(ng)) == len(remote), 10,
                 what="only the remote messages left in the queue")
    check()
    for workers in (3, 1):
        assert ng.stop(), "graceful stop timed out"
        ng.write_conf(workers=workers)
        ng.start()
        h.wait_until(lambda: len(ng.worker_pids()) == workers, 10,
                     what="%d workers" % workers)
        h.barrier(ng)
        check()


def test_restart_rebuilds_schedule_for_new_local_domain(fresh):
    # queued for a remote domain; after a restart that makes the domain
    # local (and changes the worker count) each message is delivered from
    # the queue exactly once
    ng = fresh(workers=2)
    tag = h.unique("later")
    ids = {}
    with h.SMTPConn(ng.port("main")) as c:
        c.ehlo("later.client.test")
        for i in range(12):
            t = "%s-%d" % (tag, i)
            ids[c.message("a@example.org", [t + "@later.test"],
                          h.simple_body(t))] = t
    idx = h.queue_index(ng)
    assert all(q in idx for q in ids)
    assert ng.stop()
    ng.write_conf(workers=3, stream_extra="    relay_local_domain later.test;")
    ng.start()
    for t in ids.values():
        h.wait_delivered(ng, "later.test", t, timeout=20)
    h.wait_until(lambda: not any(q in h.queue_index(ng) for q in ids), 20,
                 what="delivered messages to leave the queue")
    h.barrier(ng)
    for t in ids.values():
        files = h.mailbox_files(ng, "later.test", t)
        assert len(files) == 1, "%s delivered %d times" % (t, len(files))
        rp, dt, rcv, rest = h.split_delivered(files[0].read_bytes())
        assert dt == t + "@later.test" and rest == h.simple_body(t)


def test_a_file_left_with_every_recipient_done_is_removed(fresh):
    # a worker killed between marking the last recipient done and removing
    # the file leaves it behind; on a node without delivery the next
    # worker must still attempt it (and so remove it), not keep it queued
    # as remote mail
    ng = fresh()
    tag = h.unique("alldone")
    with h.SMTPConn(ng.port("main")) as c:
        c.ehlo("alldone.client.test")
        ids = [c.message("a@example.org", ["%s-%d@remote.test" % (tag, i)],
                         h.simple_body("%s-%d" % (tag, i)))
               for i in range(2)]
    h.wait_until(lambda: all(q in h.queue_index(ng) for q in ids), 10,
                 what="both messages queued")
    assert ng.stop()
    done = 0
    for f in h.queue_files(ng):
        data = f.read_bytes()
        if any(q.encode() in data for q in ids):
            assert b"\nrcpt P - - " in data, data[:400]
            f.write_bytes(data.replace(b"\nrcpt P - - ", b"\nrcpt D - - ", 1))
            done += 1
    assert done == 2
    ng.start()
    h.wait_until(lambda: not any(q in h.queue_index(ng) for q in ids), 20,
                 what="the files with nothing pending to go: %s"
                 % h.queue_files(ng)[:5])


def test_kill9_one_worker(fresh):
    # the master respawns the worker; a session on the surviving worker
    # completes (the new worker's incoming/ cleanup spares live files);
    # every acknowledged message is delivered exactly once
    ng = fresh()
    ng.allowed_alerts.append(r"worker process \d+ exited on signal 9\b")
    tag = h.unique("k1")

    sessions = []
    for i in range(6):
        c = h.SMTPConn(ng.port("main"))
        c.ehlo("k1.test")
        c.expect("MAIL FROM:<k@example.org>", 250, "2.1.0")
        c.expect("RCPT TO:<%s-s%d@example.test>" % (tag, i), 250, "2.1.5")
        c.expect("DATA", 354)
        c.send(("Subject: %s-s%d\r\n\r\nfirst half\r\n" % (tag, i)).encode())
        sessions.append((i, c, h.worker_of(ng, c)))
    holders = {pid for _, _, pid in sessions}
    assert None not in holders
    workers = ng.worker_pids()
    survivor = sessions[0][2]
    victim = [p for p in workers if p != survivor][0]

    acked, lock, errors = [], threading.Lock(), []
    threads = [threading.Thread(
        target=burst_client,
        args=(ng.port("main"), n, 10, tag + "-%s@example.test", acked, lock,
              errors), daemon=True) for n in range(3)]
    for t in threads:
        t.start()
    h.wait_until(lambda: len(acked) >= 10 or
                 not any(t.is_alive() for t in threads), 30, interval=0.005,
                 what="10 messages acknowledged")
    os.kill(victim, signal.SIGKILL)
    h.wait_until(lambda: victim not in ng.worker_pids()
                 and len(ng.worker_pids()) == 2, 10,
                 what="the master to respawn the killed worker")
    for t in threads:
        t.join(20)

    survived = []
    for i, c, pid in sessions:
        if pid == victim:
            assert c.wait_closed(5)
            continue
        c.send(b"second half\r\n.\r\n")
        r = c.reply()
        assert r.is_(250, "2.0.0") and r.queue_id, (i, r)
        survived.append("%s-s%d" % (tag, i))
        c.close()
    assert survived

    for u in survived + [t for _, t in acked]:
        user = u if u.startswith(tag) else "%s-%s" % (tag, u)
        h.wait_delivered(ng, "example.test", user, timeout=20)
    h.wait_until(lambda: not h.queue_files(ng), 20,
                 what="queue to empty: %s" % h.queue_files(ng)[:5])
    for u in survived + [t for _, t in acked]:
        user = u if u.startswith(tag) else "%s-%s" % (tag, u)
        n = len(h.mailbox_files(ng, "example.test", user))
        assert n == 1, "%s delivered %d times" % (user, n)
    ng.assert_no_crash()


def test_reload_applies_new_config_and_survives_a_bad_one(fresh):
    ng = fresh()
    user = h.unique("newdom")
    with h.SMTPConn(ng.port("untrusted")) as c:
        c.ehlo()
        c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
        c.expect("RCPT TO:<%s@new.test>" % user, 554, "5.7.1")

    old = set(ng.worker_pids())
    ng.write_conf(stream_extra="    relay_local_domain new.test;")
    ng.reload()
    h.wait_until(lambda: not (set(ng.worker_pids()) & old)
                 and len(ng.worker_pids()) == ng.workers, 10,
                 what="workers replaced after reload")
    with h.SMTPConn(ng.port("untrusted")) as c:
        c.message("a@example.org", [user + "@new.test"], h.simple_body(user),
                  ehlo="c.test")
    h.wait_delivered(ng, "new.test", user)

    # a broken configuration is refused; the running one goes on
    ng.allowed_alerts.append(r"\[emerg\].*missing-users-file")
    old = set(ng.worker_pids())
    ng.write_conf(stream_extra="    relay_local_domain new.test;\n"
                  "    relay_local_domain broken.test "
                  "users=conf/missing-users-file;")
    ng.reload(signal_only=True)
    h.wait_until(lambda: "missing-users-file" in ng.error_log(), 10,
                 what="the reload to be refused")
    assert set(ng.worker_pids()) == old
    user2 = h.unique("still")
    with h.SMTPConn(ng.port("untrusted")) as c:
        c.message("a@example.org", [user2 + "@new.test"],
                  h.simple_body(user2), ehlo="c.test")
    h.wait_delivered(ng, "new.test", user2)
    ng.write_conf(stream_extra="    relay_local_domain new.test;")


def test_reload_with_sessions_in_flight_remote_only(fresh):
    # remote recipients only (no local delivery): open sessions in every
    # state survive a reload on the old workers, each message is queued
    # exactly once, the old workers exit when their sessions end
    ng = fresh()
    tag = h.unique("inflight")
    states = []
    for i in range(8):
        c = h.SMTPConn(ng.port("main"))
        c.ehlo("inflight.test")
        st = i % 4
        if st >= 1:
            c.expect("MAIL FROM:<f@example.org>", 250, "2.1.0")
        if st >= 2:
            c.expect("RCPT TO:<%s-%d@remote.example>" % (tag, i), 250,
                     "2.1.5")
        if st >= 3:
            c.expect("DATA", 354)
            c.send(("Subject: %s-%d\r\n\r\nhalf\r\n" % (tag, i)).encode())
        states.append((i, st, c))

    old = set(ng.worker_pids())
    ng.reload()
    h.wait_until(lambda: len(set(ng.worker_pids()) - old) >= ng.workers, 10,
                 what="new workers after reload")

    ids = []
    for i, st, c in states:
        rcpt = "%s-%d@remote.example" % (tag, i)
        if st < 1:
            # between transactions a session may be told to go away
            r = c.cmd("MAIL FROM:<f@example.org>")
            if r.is_(421, "4.3.2"):
                assert c.wait_closed(5)
                continue
            assert r.is_(250, "2.1.0"), (i, st, r)
        if st < 2:
            c.expect("RCPT TO:<%s>" % rcpt, 250, "2.1.5")
        if st < 3:
            c.expect("DATA", 354)
            c.send(("Subject: %s-%d\r\n\r\nhalf\r\n" % (tag, i)).encode())
        c.send(b"rest\r\n.\r\n")
        r = c.reply()
        assert r.is_(250, "2.0.0") and r.queue_id, (i, st, r)
        ids.append(r.queue_id)
        c.expect("QUIT", 221, "2.0.0")
        c.close()
    h.wait_until(lambda: not (set(ng.worker_pids()) & old), 15,
                 what="old workers to exit after their sessions ended")
    idx = h.queue_index(ng)
    for q in ids:
        assert len(idx.get(q, [])) == 1, (q, idx.get(q))
    assert len(h.queue_files(ng)) == len(ids)
    assert not h.incoming_files(ng)
