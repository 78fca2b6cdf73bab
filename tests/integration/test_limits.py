"""
Limits: command line length (512 octets with CRLF), relay_max_recipients,
SIZE (advertised, MAIL parameter and actual data), relay_max_errors and
relay_timeout (idle, and mid-DATA).
"""

import time

import relayharness as h


def test_line_of_512_octets_accepted(smtp):
    c = smtp()
    c.ehlo()
    line = "NOOP " + "x" * (510 - 5)
    assert len(line) + 2 == 512
    c.expect(line, 250, "2.0.0")


def test_line_of_513_octets_refused_and_session_goes_on(smtp):
    c = smtp()
    c.ehlo()
    line = "NOOP " + "x" * (511 - 5)
    assert len(line) + 2 == 513
    c.send(line + "\r\nNOOP\r\n")
    r1, r2 = c.replies(2)
    assert r1.is_(500, "5.5.6"), r1
    assert r2.is_(250, "2.0.0"), r2
    assert c.quiet(0.3) == b""


def test_huge_line_gets_one_reply(smtp):
    c = smtp()
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    # 64 KiB of RCPT with no line end until the very end, then a good one
    c.send("RCPT TO:<" + "a" * 65536 + "@example.test>\r\n"
           "RCPT TO:<ok@example.test>\r\n")
    r1, r2 = c.replies(2)
    assert r1.is_(500, "5.5.6"), r1
    assert r2.is_(250, "2.1.5"), r2
    assert c.quiet(0.3) == b""


def test_max_recipients(relay, smtp):
    tag = h.unique("max")
    users = ["%s-%d" % (tag, i) for i in range(7)]
    c = smtp()
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    for i, u in enumerate(users):
        r = c.cmd("RCPT TO:<%s@example.test>" % u)
        if i < h.MAX_RCPT:
            assert r.is_(250, "2.1.5"), (i, r)
        else:
            assert r.is_(452, "4.5.3"), (i, r)
    c.expect("DATA", 354)
    r = c.send_data(h.simple_body(tag))
    assert r.is_(250, "2.0.0") and r.queue_id, r
    for u in users[:h.MAX_RCPT]:
        h.wait_delivered(relay, "example.test", u)
    h.barrier(relay)
    for u in users[h.MAX_RCPT:]:
        assert not h.mailbox_files(relay, "example.test", u), u


def test_mail_size_parameter_over_limit(smtp):
    c = smtp()
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org> SIZE=%d" % (h.MAX_SIZE + 1),
             552, "5.3.4")
    c.expect("MAIL FROM:<a@example.org> SIZE=%d" % (h.MAX_SIZE * 100),
             552, "5.3.4")
    c.expect("MAIL FROM:<a@example.org> SIZE=%d" % h.MAX_SIZE, 250, "2.1.0")


def body_of_size(n, tag):
    """A message of exactly n octets (after dot-unstuffing), with lines
    that need dot-stuffing on the wire."""
    head = ("Subject: %s\r\n\r\n" % tag).encode()
    line = b"." + b"y" * 76 + b"\r\n"             # 79 octets, stuffed
    body = head
    while len(body) + len(line) <= n - 2:
        body += line
    pad = n - len(body) - 2                        # 2 = final CRLF
    body += b"z" * pad + b"\r\n"
    assert len(body) == n
    return body


def test_message_of_exactly_size_accepted(relay, smtp):
    tag = h.unique("exact")
    body = body_of_size(h.MAX_SIZE, tag)
    c = smtp()
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org> SIZE=%d" % h.MAX_SIZE, 250, "2.1.0")
    c.expect("RCPT TO:<%s@example.test>" % tag, 250, "2.1.5")
    c.expect("DATA", 354)
    wire = h.dot_stuff(body)
    assert len(wire) > h.MAX_SIZE
    c.send(wire + b".\r\n")
    r = c.reply(timeout=30)
    assert r.is_(250, "2.0.0") and r.queue_id, r
    f = h.wait_delivered(relay, "example.test", tag)[0]
    assert h.split_delivered(f.read_bytes())[3] == body


def test_message_over_size_refused_at_end(relay, smtp):
    tag = h.unique("over")
    body = body_of_size(h.MAX_SIZE + 1, tag)
    c = smtp()
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    c.expect("RCPT TO:<%s@remote.example>" % tag, 250, "2.1.5")
    c.expect("RCPT TO:<%s@example.test>" % tag, 250, "2.1.5")
    c.expect("DATA", 354)
    c.send(h.dot_stuff(body) + b".\r\n")
    r = c.reply(timeout=30)
    assert r.is_(552, "5.3.4"), r
    # the session goes on and nothing was stored
    c.expect("NOOP", 250, "2.0.0")
    h.assert_not_stored(relay, tag)
    c.expect("RSET", 250, "2.0.0")
    c.message("a@example.org", ["%s-after@example.test" % tag],
              h.simple_body(tag + "-after"))


def test_much_larger_message_refused(relay, smtp):
    tag = h.unique("huge")
    c = smtp()
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    c.expect("RCPT TO:<%s@remote.example>" % tag, 250, "2.1.5")
    c.expect("DATA", 354)
    chunk = (b"x" * 998 + b"\r\n") * 1024            # 1 MiB
    c.send(("Subject: %s\r\n\r\n" % tag).encode())
    for _ in range(4):
        c.send(chunk)
    c.send(b".\r\n")
    r = c.reply(timeout=30)
    assert r.is_(552, "5.3.4"), r
    c.expect("NOOP", 250, "2.0.0")
    h.assert_not_stored(relay, tag)


def test_max_errors_closes(smtp):
    c = smtp()
    c.ehlo()
    got = []
    for i in range(h.MAX_ERRORS):
        r = c.cmd("BOGUS%d" % i)
        got.append(r)
        if r.code == 421:
            break
    # the limit-reaching error is answered by (or followed by) 421 4.7.0
    if got[-1].code != 421:
        got.append(c.reply(timeout=3))
    assert [r.code for r in got[:h.MAX_ERRORS - 1]] == \
        [500] * (h.MAX_ERRORS - 1), got
    assert len(got) in (h.MAX_ERRORS, h.MAX_ERRORS + 1), got
    assert got[-1].is_(421, "4.7.0"), got
    assert c.wait_closed(5), "not closed after 421"


def test_errors_below_limit_keep_session(smtp):
    c = smtp()
    c.ehlo()
    for i in range(h.MAX_ERRORS - 1):
        c.expect("BOGUS%d" % i, 500, "5.5.2")
    c.expect("NOOP", 250, "2.0.0")
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")


def test_idle_timeout(smtp):
    c = smtp("idle")
    c.ehlo()
    t0 = time.monotonic()
    r = c.reply(timeout=6)
    assert r.is_(421, "4.4.2"), r
    assert 0.5 <= time.monotonic() - t0 <= 5, time.monotonic() - t0
    assert c.wait_closed(3), "not closed after 421 4.4.2"


def test_idle_timeout_before_ehlo(smtp):
    c = smtp("idle")
    r = c.reply(timeout=6)
    assert r.is_(421, "4.4.2"), r
    assert c.wait_closed(3)


def test_timeout_mid_data_stores_nothing(relay, smtp):
    tag = h.unique("middata")
    c = smtp("idle")
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    c.expect("RCPT TO:<%s@remote.example>" % tag, 250, "2.1.5")
    c.expect("DATA", 354)
    c.send(("Subject: %s\r\n\r\nhalf a message\r\n" % tag).encode())
    r = c.reply(timeout=6)
    assert r.is_(421, "4.4.2"), r
    assert c.wait_closed(3)
    h.assert_not_stored(relay, tag)


def test_activity_resets_idle_timer(smtp):
    c = smtp("idle")
    c.ehlo()
    t0 = time.monotonic()
    # a NOOP every 0.4s for 2.4s: never idle for 1s
    while time.monotonic() - t0 < 2.4:
        c.expect("NOOP", 250, "2.0.0")
        assert c.quiet(0.4) == b""
    c.expect("NOOP", 250, "2.0.0")


def test_recipient_overshoot_is_not_an_error(relay, smtp):
    # RFC 5321 4.5.3.1.8: clients send the rest in a later transaction;
    # 452 for extra recipients must not count towards relay_max_errors
    tag = h.unique("over")
    users = ["%s-%d" % (tag, i) for i in range(h.MAX_RCPT + 2 * h.MAX_ERRORS)]
    c = smtp()
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    for i, u in enumerate(users):
        r = c.cmd("RCPT TO:<%s@example.test>" % u)
        want = (250, "2.1.5") if i < h.MAX_RCPT else (452, "4.5.3")
        assert r.is_(*want), (i, r)
    c.expect("DATA", 354)
    r = c.send_data(h.simple_body(tag))
    assert r.is_(250, "2.0.0") and r.queue_id, r
    # the rest in a second transaction
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    for u in users[h.MAX_RCPT:2 * h.MAX_RCPT]:
        c.expect("RCPT TO:<%s@example.test>" % u, 250, "2.1.5")
    c.expect("DATA", 354)
    assert c.send_data(h.simple_body(tag)).is_(250, "2.0.0")
    for u in users[:2 * h.MAX_RCPT]:
        h.wait_delivered(relay, "example.test", u)


def test_long_rcpt_with_dsn_parameters_accepted(smtp):
    """MAIL/RCPT of an ESMTP client may exceed 512 octets by their
    parameters (RFC 3461 ORCPT); other commands may not."""
    c = smtp()
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org> ENVID=" + "E" * 100, 250, "2.1.0")
    orcpt = "rfc822;" + "o" * 400 + "@example.test"
    line = "RCPT TO:<%s@example.test> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=%s" \
        % ("l" * 60, orcpt)
    assert len(line) + 2 > 512
    c.expect(line, 250, "2.1.5")
    c.expect("RSET", 250, "2.0.0")
    c.expect("HELP " + "x" * 600, 500, "5.5.6")
