"""
The acceptance journal (relay_spool_sync journal, the default).

"250" is sent once the message's record in the worker's journal is synced;
its queue file is written after its first attempt (made "hollow" until
then) and synced only at the segment's checkpoint.  Hollow files through a
kill -9, a checkpoint and a fast stop are tested in test_delivery.py, whose
sinks can hold a first attempt.  These tests check what that promises:
  - each worker has its journal, and a graceful stop retires it;
  - kill -9 of everything, same boot: the queue files are whole (the page
    cache survives), the orphan journals are retired, nothing is rewritten;
  - a simulated power loss (queue files deleted or cut short, the journals'
    boot id changed): the master writes every acknowledged message back,
    byte for byte, before any worker starts;
  - delivery does not wait for the checkpoint, and a checkpoint whose
    messages all left syncs no queue file ("retire"); one with a message
    still queued syncs the spool ("checkpoint");
  - a damaged record ends the replay of its segment: the records before it
    come back, none after it;
  - a record that cannot be written back keeps the journal (the others
    become pads) and a queue scan finishes the work;
  - the other sync modes still accept and deliver.
The journal format is the one documented in module/ngx_relay_journal.c.
"""

import os
import re
import struct
import uuid
import zlib

import pytest

import metricsharness as mh
import relayharness as h


NO_CHECKPOINT = "    relay_spool_checkpoint_interval 1h;"


def journal_dir(ng):
    return ng.spool / "journal"


journals = h.journal_files
read_header = h.journal_header
records = h.journal_records


def started(ng, workers):
    """Waits until each worker has made its journal."""
    h.wait_until(lambda: len(journals(ng)) == workers, 10,
                 what="a journal per worker: %s" % journals(ng))
    return journals(ng)


def set_boot_id(path, boot):
    """Rewrites the boot id of both segment headers, as if the journal had
    been written before the machine restarted."""
    data = bytearray(path.read_bytes())
    _, seg_size, _ = read_header(data, 0)
    for base in (0, seg_size):
        data[base + 24:base + 60] = boot
        struct.pack_into("<I", data, base + 60, zlib.crc32(bytes(data[base:base + 60])))
    path.write_bytes(bytes(data))


def send(ng, n, tag, rcpt="%s@remote.example"):
    """n messages on one connection; returns [(queue id, tag)]."""
    acked = []
    with h.SMTPConn(ng.port("main")) as c:
        c.ehlo()
        for i in range(n):
            t = "%s-%d" % (tag, i)
            q = c.message("sender@example.org", [rcpt % t],
                          h.simple_body(t))
            acked.append((q, t))
    return acked


def queue_bytes(ng, ids):
    """The queue files once written (a new message's stays hollow, its
    record holding it, until its first attempt ends)."""
    h.wait_complete(ng, ids)
    return {q: (ng.queue_dir / q).read_bytes() for q in ids}


def accept_then_crash(ng, n, tag):
    """n messages, then kill -9 of everything: (ids, their queue files as
    they were, the one worker's journal)."""
    ids = [q for q, _ in send(ng, n, tag)]
    before = queue_bytes(ng, ids)
    ng.kill9()
    return ids, before, journals(ng)[0]


def assert_queued(ng, acked):
    h.wait_complete(ng, [q for q, _ in acked])
    for q, t in acked:
        assert t.encode() in (ng.queue_dir / q).read_bytes(), (q, t)


def test_journal_per_worker_retired_on_quit(fresh):
    ng = fresh()
    pids = sorted(ng.worker_pids())
    assert sorted(int(p.name) for p in started(ng, 2)) == pids
    for p in journals(ng):
        assert p.stat().st_size == 16 * 1024 * 1024
        read_header(p.read_bytes(), 0)
    acked = send(ng, 5, "quit")
    assert ng.stop()
    assert journals(ng) == [], journals(ng)
    assert_queued(ng, acked)


def test_records_hold_the_queue_files(fresh):
    ng = fresh(workers=1, stream_extra=NO_CHECKPOINT)
    started(ng, 1)
    acked = send(ng, 6, "rec")
    recs = records(journals(ng)[0])
    assert [r[0] for r in recs] == [q for q, _ in acked]
    files = queue_bytes(ng, [q for q, _ in acked])
    for (q, _), (_, _, data) in zip(acked, recs):
        assert data == files[q]
        assert data.startswith(b"RELAY-QUEUE 1\n") and b"\nRELAY-END " in data


def test_kill9_same_boot_retires_without_replay(fresh):
    ng = fresh(stream_extra=NO_CHECKPOINT)
    started(ng, 2)
    old = {p.name for p in journals(ng)}
    acked = send(ng, 20, "same")
    before = queue_bytes(ng, [q for q, _ in acked])
    ng.kill9()
    ng.start()
    h.wait_until(lambda: len(journals(ng)) == 2
                 and not old & {p.name for p in journals(ng)}, 10,
                 what="old journals retired, new ones made: %s"
                 % journals(ng))
    assert queue_bytes(ng, before) == before
    log = ng.error_log()
    assert "restored" not in log
    assert len(re.findall(r"relay journal \"\d+\" of a dead process retired",
                          log)) >= 2, log[-2000:]


def test_power_loss_replay_byte_exact(fresh):
    ng = fresh(stream_extra=NO_CHECKPOINT)
    started(ng, 2)
    acked = send(ng, 15, "pl-a") + send(ng, 15, "pl-b")
    ids = [q for q, _ in acked]
    before = queue_bytes(ng, ids)
    ng.kill9()

    # the machine "went down": queue files never reached the disk, or only
    # in part, and the journals were written during another boot
    for i, q in enumerate(ids):
        p = ng.queue_dir / q
        if i % 3 == 0:
            p.write_bytes(before[q][:100])
        else:
            p.unlink()
    other = str(uuid.uuid4()).encode()
    for j in journals(ng):
        set_boot_id(j, other)

    ng.start()
    assert queue_bytes(ng, ids) == before
    log = ng.error_log()
    restored = [int(n) for n in
                re.findall(r"of an earlier boot: (\d+) message\(s\) restored",
                           log)]
    assert sum(restored) == len(ids), log[-2000:]
    # the recovered files belong to the workers, which take them over
    st = os.stat(ng.queue_dir / ids[0])
    assert st.st_uid == os.stat(ng.queue_dir).st_uid
    # and the relay goes on working
    assert_queued(ng, send(ng, 2, "after"))


def test_damaged_record_ends_replay(fresh):
    ng = fresh(workers=1, stream_extra=NO_CHECKPOINT)
    started(ng, 1)
    ids, before, j = accept_then_crash(ng, 5, "torn")
    recs = records(j)
    assert [r[0] for r in recs] == ids
    data = bytearray(j.read_bytes())
    _, off, _ = recs[2]
    data[off + 32 + len(ids[2]) + 40] ^= 0xff    # inside the third message
    j.write_bytes(bytes(data))
    for q in ids:
        (ng.queue_dir / q).unlink()
    set_boot_id(j, str(uuid.uuid4()).encode())

    ng.start()
    assert queue_bytes(ng, ids[:2]) == {q: before[q] for q in ids[:2]}
    for q in ids[2:]:
        assert not (ng.queue_dir / q).exists(), q
    assert "of an earlier boot: 2 message(s) restored" in ng.error_log()


def test_local_delivery_after_checkpoint(fresh):
    ng = fresh(stream_extra="    relay_spool_checkpoint_interval 200ms;")
    acked = send(ng, 3, "local", rcpt="%s@example.test")
    for q, t in acked:
        h.wait_delivered(ng, "example.test", t)
    for q, t in acked:
        box = ng.maildir / "example.test" / t / "new"
        files = list(box.iterdir())
        assert len(files) == 1 and t.encode() in files[0].read_bytes()
    h.wait_until(lambda: not any((ng.queue_dir / q).exists()
                                 for q, _ in acked), 10,
                 what="queue files removed")


def test_delivery_does_not_wait_for_the_checkpoint(fresh):
    ng = fresh(workers=1, stream_extra=NO_CHECKPOINT)
    started(ng, 1)
    acked = send(ng, 3, "early", rcpt="%s@example.test")
    for q, t in acked:
        h.wait_delivered(ng, "example.test", t, timeout=5)
    h.wait_until(lambda: not any((ng.queue_dir / q).exists()
                                 for q, _ in acked), 5,
                 what="queue files removed")
    # no checkpoint for an hour: the records are still valid
    assert [r[0] for r in records(journals(ng)[0])] == [q for q, _ in acked]


def test_checkpoint_syncs_only_for_messages_still_queued(fresh):
    mport = mh.alloc_port()
    ng = fresh(workers=1,
               stream_extra="    relay_spool_checkpoint_interval 1s;",
               http_extra=mh.http_block(mport))
    started(ng, 1)

    def count(m, kind):
        return mh.value(m, "relay_spool_sync_seconds_count", kind=kind)

    acked = send(ng, 5, "gone", rcpt="%s@example.test")
    for q, t in acked:
        h.wait_delivered(ng, "example.test", t, timeout=5)
    m = mh.wait_value(mport, lambda m: count(m, "retire") >= 1,
                      what="a checkpoint without queue files")
    assert count(m, "checkpoint") == 0

    # relay_delivery is off: a remote message stays, its file is synced
    kept = send(ng, 1, "kept")
    mh.wait_value(mport, lambda m: count(m, "checkpoint") >= 1,
                  what="a checkpoint that syncs the spool")
    assert_queued(ng, kept)
    assert [r[0] for r in records(journals(ng)[0])] == []


def test_a_full_segment_cuts_the_sealed_ones_wait_short(fresh):
    """A sealed segment whose messages stay queued waits for them up to the
    interval (an hour here), but not once the active segment is full too:
    then its checkpoint runs at once, and the next groups find room in the
    journal again instead of syncing their files."""
    mport = mh.alloc_port()
    ng = fresh(workers=1,
               stream_extra="    relay_spool_journal_size 256k;\n"
                            + NO_CHECKPOINT,
               http_extra=mh.http_block(mport))
    started(ng, 1)

    def count(m, kind):
        return mh.value(m, "relay_spool_sync_seconds_count", kind=kind) or 0

    # 30 KB each, four to a 128 KB segment; delivery is off: all stay
    filler = b"".join(b"%05d %s\r\n" % (i, b"x" * 72)
                      for i in range(380))
    acked = []
    with h.SMTPConn(ng.port("main")) as c:
        c.ehlo()
        for i in range(24):
            t = "full-%d" % i
            acked.append(c.message("sender@example.org",
                                   ["%s@remote.example" % t],
                                   h.simple_body(t)[:-2] + filler))

    m = mh.wait_value(mport, lambda m: count(m, "checkpoint") >= 2,
                      what="checkpoints of full segments")
    journaled, fallback = count(m, "journal"), count(m, "syncfs")
    assert journaled + fallback == 24, (journaled, fallback)
    assert journaled >= 16 and fallback <= 8, (journaled, fallback)
    for q in acked:
        assert (ng.queue_dir / q).exists(), q


@pytest.mark.parametrize("mode", ["syncfs", "files"])
def test_other_sync_modes(fresh, mode):
    ng = fresh(stream_extra="    relay_spool_sync %s;" % mode)
    assert_queued(ng, send(ng, 3, mode))
    assert journals(ng) == []


def test_failed_restore_keeps_journal_for_the_scan(fresh):
    ng = fresh(workers=1, stream_extra=NO_CHECKPOINT
               + "\n    relay_queue_scan_interval 1s;")
    started(ng, 1)
    ids, before, j = accept_then_crash(ng, 3, "retry")
    for q in ids:
        (ng.queue_dir / q).unlink()
    blocker = ng.queue_dir / ids[1]
    blocker.mkdir()                          # its write-back fails
    set_boot_id(j, str(uuid.uuid4()).encode())

    ng.start()
    assert "the others could not be, kept for the next try" \
        in ng.error_log()
    assert j.exists()
    assert queue_bytes(ng, [ids[0], ids[2]]) \
        == {q: before[q] for q in (ids[0], ids[2])}
    # the records written back became pads: only the failed one is left
    assert [r[0] for r in records(j)] == [ids[1]]

    blocker.rmdir()
    h.wait_until(lambda: not j.exists(), 15,
                 what="a queue scan to write back the rest")
    assert queue_bytes(ng, ids) == before
