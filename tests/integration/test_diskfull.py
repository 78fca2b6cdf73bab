"""
Disk full: the spool on a 2 MB tmpfs.  With the file system full a message
gets 452 4.3.1 (or 451 4.3.0), never 250, and leaves nothing behind in
spool/incoming/; once space is freed a message is queued again.
Skipped when this machine does not allow mounting a tmpfs.
"""

import errno
import os
import subprocess

import pytest

import relayharness as h


@pytest.fixture(scope="module")
def full_relay(tmp_path_factory, certs):
    h.require_module()
    prefix = h.make_prefix(tmp_path_factory.mktemp("diskfull"), certs)
    spool = prefix / "spool"
    uid, gid = h._worker_ids()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o",
         "size=2m,mode=0777,uid=%d,gid=%d" % (uid, gid), "tmpfs", str(spool)],
        capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: %s" % r.stderr.strip())
    ng = None
    try:
        ng = h.launch_at(prefix)
        yield ng
    finally:
        if ng is not None:
            ng.stop()
        subprocess.run(["umount", str(spool)], capture_output=True,
                       timeout=30)
    ng.assert_log_clean()


def fill(path):
    """Writes path until the file system refuses; returns octets written."""
    n = 0
    block = b"\0" * 65536
    with open(path, "wb", buffering=0) as f:
        for _ in range(1024):                      # bounded: 64 MiB at most
            try:
                n += f.write(block)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                break
        else:
            raise AssertionError("tmpfs never filled")
        for _ in range(16):                        # the last partial pages
            try:
                f.write(b"\0" * 4096)
            except OSError:
                break
    # defeat the small leftovers too
    for i in range(64):
        try:
            with open(str(path) + ".%d" % i, "wb", buffering=0) as f:
                f.write(b"\0" * 512)
        except OSError:
            break
    return n


def attempt(ng, tag):
    """One transaction; returns the list of replies until the first
    refusal or the end of data."""
    got = []
    with h.SMTPConn(ng.port("main")) as c:
        c.ehlo("full.test")
        for line in ["MAIL FROM:<a@example.org>",
                     "RCPT TO:<%s@remote.example>" % tag, "DATA"]:
            r = c.cmd(line)
            got.append(r)
            if r.code >= 400:
                return got
        body = h.simple_body(tag) + (b"x" * 200 + b"\r\n") * 100
        got.append(c.send_data(body))
        # the session survives a full disk
        if got[-1].code < 500:
            c.expect("RSET", 250, "2.0.0")
    return got


def test_disk_full(full_relay):
    ng = full_relay
    # each worker's 16 MB journal cannot be made on 2 MB: wait until every
    # worker gave up and removed its partial one, or that removal could
    # free space after the filler took it all
    h.wait_until(lambda: ng.error_log().count("could not be made")
                 >= ng.workers, 30,
                 what="the workers' journals given up")
    ok = h.unique("before")
    with h.SMTPConn(ng.port("main")) as c:
        c.message("a@example.org", [ok + "@remote.example"],
                  h.simple_body(ok), ehlo="c.test")

    filler = ng.spool / "filler"
    fill(filler)
    tag = h.unique("full")
    try:
        got = attempt(ng, tag)
        assert not any(r.queue_id for r in got), \
            "250 queued with a full spool: %r" % got
        last = got[-1]
        assert last.is_(452, "4.3.1") or last.is_(451, "4.3.0"), got
        h.wait_until(lambda: not h.incoming_files(ng)
                     and not h.incomplete_queue_files(ng), 5,
                     what="partial files removed after the failure: %s"
                     % (h.incoming_files(ng) + h.incomplete_queue_files(ng)))
        assert not h.files_containing(ng.queue_dir, tag)
    finally:
        for p in list(ng.spool.glob("filler*")):
            os.unlink(p)

    # space is back: mail flows again (within a few tries)
    tag2 = h.unique("after")

    def try_send():
        got = attempt(ng, tag2)
        return got[-1].queue_id

    qid = h.wait_until(try_send, 10, interval=0.5,
                       what="a message queued after freeing space")
    assert h.queue_file_for(ng, qid)
    assert h.files_containing(ng.queue_dir, ok), "earlier message lost"
