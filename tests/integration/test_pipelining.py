"""
PIPELINING (RFC 2920): a whole envelope in one write, replies in order,
one bad recipient in the middle, a second pipelined transaction, and the
whole session (EHLO to QUIT) in one write.
"""

import relayharness as h


def test_pipelined_envelope(relay, smtp):
    tag = h.unique("pipe")
    a, b = tag + "-a", tag + "-b"
    c = smtp()
    c.ehlo()
    c.send("MAIL FROM:<p@example.org>\r\n"
           "RCPT TO:<%s@example.test>\r\n"
           "RCPT TO:<nosuchuser@strict.test>\r\n"
           "RCPT TO:<%s@example.test>\r\n"
           "DATA\r\n" % (a, b))
    rs = c.replies(5)
    assert rs[0].is_(250, "2.1.0"), rs
    assert rs[1].is_(250, "2.1.5"), rs
    assert rs[2].is_(550, "5.1.1"), rs
    assert rs[3].is_(250, "2.1.5"), rs
    assert rs[4].code == 354, rs
    body1 = h.simple_body(tag + "-1")
    r = c.send_data(body1)
    assert r.is_(250, "2.0.0") and r.queue_id, r

    # second transaction, pipelined after RSET
    c.send("RSET\r\nMAIL FROM:<p@example.org>\r\n"
           "RCPT TO:<%s@example.test>\r\nDATA\r\n" % a)
    rs = c.replies(4)
    assert rs[0].is_(250, "2.0.0"), rs
    assert rs[1].is_(250, "2.1.0"), rs
    assert rs[2].is_(250, "2.1.5"), rs
    assert rs[3].code == 354, rs
    body2 = h.simple_body(tag + "-2")
    r2 = c.send_data(body2)
    assert r2.is_(250, "2.0.0") and r2.queue_id, r2
    assert r2.queue_id != r.queue_id

    fa = h.wait_delivered(relay, "example.test", a, count=2)
    fb = h.wait_delivered(relay, "example.test", b)
    bodies = sorted(h.split_delivered(f.read_bytes())[3] for f in fa)
    assert bodies == sorted([body1, body2])
    assert h.split_delivered(fb[0].read_bytes())[3] == body1
    assert not (relay.maildir / "strict.test" / "nosuchuser").exists()


def test_whole_session_in_one_write(relay, smtp):
    # out of sync after DATA (RFC 2920 3.1): only with the discipline off
    # (test_protocol_sync.py has the default)
    user = h.unique("onewrite")
    body = h.simple_body(user)
    c = smtp("lax")
    c.send(b"EHLO one.write.test\r\nMAIL FROM:<p@example.org>\r\n"
           + ("RCPT TO:<%s@example.test>\r\n" % user).encode()
           + b"DATA\r\n" + h.dot_stuff(body) + b".\r\nQUIT\r\n")
    rs = c.replies(6)
    assert rs[0].code == 250 and len(rs[0].lines) > 1, rs
    assert rs[1].is_(250, "2.1.0") and rs[2].is_(250, "2.1.5"), rs
    assert rs[3].code == 354, rs
    assert rs[4].is_(250, "2.0.0") and rs[4].queue_id, rs
    assert rs[5].is_(221, "2.0.0"), rs
    assert c.wait_closed(5)
    f = h.wait_delivered(relay, "example.test", user)[0]
    rp, dt, rcv, rest = h.split_delivered(f.read_bytes())
    assert rest == body
    h.check_received(rcv, "one.write.test", "ESMTP", rs[4].queue_id)


def test_pipelined_errors_keep_order(smtp):
    c = smtp()
    c.ehlo()
    c.send("RCPT TO:<u@example.test>\r\n"          # 503: no MAIL yet
           "MAIL FROM:<p@example.org>\r\n"
           "MAIL FROM:<p@example.org>\r\n"          # 503: nested
           "RCPT TO:<bad address@example.test>\r\n"  # 501
           "RCPT TO:<u@example.test>\r\n"
           "NOOP\r\n")
    rs = c.replies(6)
    assert [(r.code, r.enh) for r in rs] == [
        (503, "5.5.1"), (250, "2.1.0"), (503, "5.5.1"), (501, "5.1.3"),
        (250, "2.1.5"), (250, "2.0.0")], rs


def test_many_transactions_pipelined(relay, smtp):
    tag = h.unique("many")
    c = smtp("lax")
    c.ehlo()
    wire = b""
    for i in range(10):
        wire += ("MAIL FROM:<p@example.org>\r\nRCPT TO:<%s-%d@example.test>"
                 "\r\nDATA\r\n" % (tag, i)).encode()
        wire += h.dot_stuff(h.simple_body("%s-%d" % (tag, i))) + b".\r\n"
    c.send(wire)
    ids = set()
    for i in range(10):
        rs = c.replies(4)
        assert [r.code for r in rs] == [250, 250, 354, 250], (i, rs)
        ids.add(rs[3].queue_id)
    assert len(ids) == 10 and None not in ids
    for i in range(10):
        h.wait_delivered(relay, "example.test", "%s-%d" % (tag, i))


def test_large_messages_pipelined_through_the_grown_buffer(relay, smtp):
    # a message that fills the 4 KB input buffer in a read gets 32 KB for
    # the rest of it, and 4 KB again for commands once what is left fits:
    # large bodies back to back (lines that start with dots across every
    # boundary), each followed by the next envelope in the same write, and
    # once by 3 KB of NOOPs, more than the small buffer takes back at once
    tag = h.unique("bigpipe")
    c = smtp("lax")
    c.ehlo()
    bodies, wire = [], b""
    for i in range(6):
        lines = [("." * (j % 3) + "%d line %d " % (i, j)
                  + "y" * (j * 11 % 97) + "\r\n").encode()
                 for j in range(600 + 500 * i)]
        body = h.simple_body("%s-%d" % (tag, i)) + b"".join(lines)
        bodies.append(body)
        wire += ("MAIL FROM:<p@example.org>\r\nRCPT TO:<%s-%d@example.test>"
                 "\r\nDATA\r\n" % (tag, i)).encode()
        wire += h.dot_stuff(body) + b".\r\n"
        if i == 2:
            wire += b"NOOP\r\n" * 512
    c.send(wire)
    ids = set()
    for i in range(6):
        rs = c.replies(4)
        assert [r.code for r in rs] == [250, 250, 354, 250], (i, rs)
        ids.add(rs[3].queue_id)
        if i == 2:
            assert all(r.is_(250, "2.0.0") for r in c.replies(512))
    assert len(ids) == 6 and None not in ids
    c.expect("NOOP", 250, "2.0.0")

    # a big body, then half a command: the half moves to the 4 KB buffer
    c.send("MAIL FROM:<p@example.org>\r\nRCPT TO:<%s-6@example.test>\r\n"
           "DATA\r\n" % tag)
    assert [r.code for r in c.replies(3)] == [250, 250, 354]
    bodies.append(bodies[5] + b"seventh\r\n")
    c.send(h.dot_stuff(bodies[6]) + b".\r\nMAIL FROM:<p@exa")
    r = c.reply()
    assert r.is_(250, "2.0.0") and r.queue_id, r
    assert c.quiet(0.2) == b""
    c.send("mple.org>\r\nRCPT TO:<%s-7@example.test>\r\nDATA\r\n" % tag)
    assert [r.code for r in c.replies(3)] == [250, 250, 354]
    bodies.append(h.simple_body("%s-7" % tag))
    r = c.send_data(bodies[7])
    assert r.is_(250, "2.0.0") and r.queue_id, r

    for i in range(8):
        f = h.wait_delivered(relay, "example.test", "%s-%d" % (tag, i))[0]
        assert h.split_delivered(f.read_bytes())[3] == bodies[i], i


def test_pipelined_flood_with_backpressure(smtp):
    # the client writes 20000 commands before reading: the server must
    # neither lose nor reorder replies when its output backs up
    import threading
    n = 20000
    c = smtp()
    c.ehlo()
    c.sock.settimeout(30)
    errs = []

    def writer():
        try:
            c.sock.sendall(b"NOOP\r\n" * n + b"RSET\r\n")
        except OSError as e:
            errs.append(e)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    for i in range(n):
        r = c.reply(timeout=30)
        assert r.is_(250, "2.0.0"), (i, r)
    assert c.reply().is_(250, "2.0.0")           # RSET
    c.expect("NOOP", 250, "2.0.0")
    assert c.quiet(0.2) == b""
    t.join(10)
    assert not errs, errs
