"""
Pipelining discipline (RFC 2920 3.1), relay_strict_pipelining: a client
that sends anything after DATA, the last chunk of BDAT LAST, STARTTLS, a
step of AUTH or QUIT before the server's reply is out of sync: 554 5.5.0,
nothing it sent after that executed or stored, the connection closed.
Legitimate pipelining (MAIL, RCPTs, DATA in one write; the next
transaction right after the final dot) goes on, with raw sockets, smtplib
and swaks.  The "lax" listener has the discipline off.
"""

import smtplib
import subprocess

import relayharness as h


SYNC = (554, "5.5.0")


def sync_error(r):
    return r.is_(*SYNC) and "synchronization" in r.text


def test_content_before_354_refused(relay, smtp):
    user = h.unique("before354")
    body = h.simple_body(user)
    c = smtp()
    c.send(b"EHLO one.write.test\r\nMAIL FROM:<p@example.org>\r\n"
           + ("RCPT TO:<%s@example.test>\r\n" % user).encode()
           + b"DATA\r\n" + h.dot_stuff(body) + b".\r\nQUIT\r\n")
    rs = c.replies(4)
    assert rs[0].code == 250, rs
    assert rs[1].is_(250, "2.1.0") and rs[2].is_(250, "2.1.5"), rs
    assert sync_error(rs[3]), rs
    assert c.wait_closed(5)
    h.assert_not_stored(relay, user.encode())
    log = relay.error_log()
    assert "SMTP protocol synchronization error: input after DATA before " \
           "the reply: \"From: <sender@example.org>\\x0d\\x0aTo:" in log, \
        log[-2000:]


def test_legitimate_pipelining(relay, smtp):
    # MAIL, RCPT, DATA in one write; the content and the next transaction
    # after the final dot in the next; the last content and QUIT together
    a, b = h.unique("legit"), h.unique("legit")
    c = smtp()
    c.ehlo()
    c.send(("MAIL FROM:<p@example.org>\r\nRCPT TO:<%s@example.test>\r\n"
            "DATA\r\n" % a).encode())
    rs = c.replies(3)
    assert [r.code for r in rs] == [250, 250, 354], rs
    c.send(h.dot_stuff(h.simple_body(a)) + b".\r\n"
           + ("MAIL FROM:<p@example.org>\r\nRCPT TO:<%s@example.test>\r\n"
              "DATA\r\n" % b).encode())
    rs = c.replies(4)
    assert rs[0].is_(250, "2.0.0") and rs[0].queue_id, rs
    assert [r.code for r in rs[1:]] == [250, 250, 354], rs
    c.send(h.dot_stuff(h.simple_body(b)) + b".\r\nQUIT\r\n")
    rs = c.replies(2)
    assert rs[0].queue_id and rs[1].is_(221, "2.0.0"), rs
    h.wait_delivered(relay, "example.test", a)
    h.wait_delivered(relay, "example.test", b)


def test_smtplib(relay):
    user = h.unique("smtplib")
    with smtplib.SMTP(h.HOST, relay.port("main"), timeout=10) as s:
        s.ehlo("smtplib.test")
        assert s.has_extn("pipelining")
        s.sendmail("p@example.org", ["%s@example.test" % user],
                   h.simple_body(user))
        s.sendmail("p@example.org", ["%s@example.test" % user],
                   h.simple_body(user + "-2"))
    h.wait_delivered(relay, "example.test", user, 2)


def test_swaks_pipelining(relay):
    user = h.unique("swakspipe")
    r = subprocess.run(
        ["swaks", "--server", "%s:%d" % (h.HOST, relay.port("main")),
         "--pipeline", "--ehlo", "swaks.sync.test",
         "--from", "p@example.org", "--to", "%s@example.test" % user,
         "--body", user],
        capture_output=True, timeout=60)
    assert r.returncode == 0, r.stdout.decode(errors="replace")[-2000:]
    h.wait_delivered(relay, "example.test", user)


def test_smtpsmug_bare_lf_end(relay, smtp):
    # smtpsmug's "\n.\n": no end of data here, the message is refused for
    # its bare LF, and the smuggled transaction is content, never run
    victim = h.unique("smugvictim")
    c = smtp()
    c.ehlo()
    c.expect("MAIL FROM:<p@example.org>", 250)
    c.expect("RCPT TO:<%s-first@example.test>" % victim, 250)
    c.expect("DATA", 354)
    c.send(b"Subject: first\r\n\r\nfirst\n.\n"
           + ("MAIL FROM:<admin@example.test>\r\n"
              "RCPT TO:<%s@example.test>\r\nDATA\r\n"
              "Subject: smuggled\r\n\r\n%s\r\n" % (victim, victim)).encode()
           + b".\r\n")
    r = c.reply()
    assert r.is_(550, "5.6.0"), r
    c.expect("NOOP", 250)
    h.assert_not_stored(relay, victim.encode())


def test_smtpsmug_pipelined_second_transaction(relay, smtp):
    # the end of data, then a second transaction with its content sent
    # before "354": the first message is queued, the second never
    first, victim = h.unique("smugfirst"), h.unique("smugvictim")
    c = smtp()
    c.ehlo()
    c.expect("MAIL FROM:<p@example.org>", 250)
    c.expect("RCPT TO:<%s@example.test>" % first, 250)
    c.expect("DATA", 354)
    c.send(h.dot_stuff(h.simple_body(first)) + b".\r\n"
           + ("MAIL FROM:<admin@example.test>\r\n"
              "RCPT TO:<%s@example.test>\r\nDATA\r\n" % victim).encode()
           + h.dot_stuff(h.simple_body(victim)) + b".\r\n")
    rs = c.replies(4)
    assert rs[0].is_(250, "2.0.0") and rs[0].queue_id, rs
    assert rs[1].code == 250 and rs[2].code == 250, rs
    assert sync_error(rs[3]), rs
    assert c.wait_closed(5)
    h.wait_delivered(relay, "example.test", first)
    h.assert_not_stored(relay, victim.encode())


def test_quit_then_more(smtp):
    c = smtp()
    c.ehlo()
    c.send(b"QUIT\r\nNOOP\r\n")
    assert sync_error(c.reply())
    assert c.wait_closed(5)


def test_auth_then_mail_pipelined(relay, smtp):
    c = smtp("sub")
    c.ehlo()
    c.starttls()
    c.ehlo()
    c.send(("AUTH PLAIN %s\r\nMAIL FROM:<a@example.org>\r\n"
            % h.auth_plain_token("alice@example.test", "alice-secret"))
           .encode())
    r1, r2 = c.replies(2)
    assert r1.is_(235, "2.7.0"), r1
    assert sync_error(r2), r2
    assert c.wait_closed(5)


def test_auth_login_response_pipelined(smtp):
    c = smtp("sub")
    c.ehlo()
    c.starttls()
    c.ehlo()
    c.send(b"AUTH LOGIN\r\n" + h.b64("alice@example.test").encode()
           + b"\r\n")
    r1, r2 = c.replies(2)
    assert r1.code == 334, r1
    assert sync_error(r2), r2
    assert c.wait_closed(5)


def test_bdat_last_then_command(relay, smtp):
    user = h.unique("bdatsync")
    body = ("Subject: %s\r\n\r\nchunk\r\n" % user).encode()
    c = smtp()
    c.ehlo()
    c.send(("MAIL FROM:<p@example.org>\r\nRCPT TO:<%s@example.test>\r\n"
            % user).encode()
           + b"BDAT %d LAST\r\n" % len(body) + body + b"NOOP\r\n")
    rs = c.replies(4)
    assert rs[2].is_(250, "2.0.0") and rs[2].queue_id, rs
    assert sync_error(rs[3]), rs
    assert c.wait_closed(5)
    h.wait_delivered(relay, "example.test", user)


def test_lax_listener_runs_the_rest(relay, smtp):
    c = smtp("lax")
    c.ehlo()
    c.send(b"QUIT\r\nNOOP\r\n")
    assert c.reply().is_(221, "2.0.0")
    assert c.wait_closed(5)
