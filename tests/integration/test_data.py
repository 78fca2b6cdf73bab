"""
DATA: end of data only at CRLF.CRLF, bare CR/LF refused (550 5.6.0) and
SMTP smuggling, the Received: header, byte-exact Maildir delivery, mailbox
names, spool cleanup; with raw sockets, smtplib and swaks.
"""

import smtplib
import subprocess

import pytest

import relayharness as h


def deliver(relay, smtp, body, user=None, sender="sender@example.org",
            helo="client.test", params=""):
    user = user or h.unique("d")
    c = smtp()
    c.ehlo(helo)
    c.expect("MAIL FROM:<%s>%s" % (sender, params), 250, "2.1.0")
    c.expect("RCPT TO:<%s@example.test>" % user, 250, "2.1.5")
    c.expect("DATA", 354)
    r = c.send_data(body)
    assert r.is_(250, "2.0.0") and r.queue_id, r
    f = h.wait_delivered(relay, "example.test", user.lower())[0]
    return r.queue_id, f.read_bytes(), c


def tricky_body(tag):
    lines = [
        b"From: <sender@example.org>",
        b"To: <u@example.test>",
        ("Subject: tricky %s" % tag).encode(),
        b"X-Long: " + b"h" * 900,
        b"",
        b".",
        b"..",
        b"...",
        b". leading dot and space",
        b".hidden",
        b"",
        b"",
        b"trailing spaces   ",
        b"\ttab first",
        b" space first",
        b"8-bit: caf\xe9 \xff\xfe \xc3\xa9t\xc3\xa9",
        b"long: " + b"L" * 5000,
        b"From the start of a line",
        b"> quoted",
        b"",
        b"last line",
    ]
    return b"\r\n".join(lines) + b"\r\n"


def test_byte_exact_delivery(relay, smtp):
    tag = h.unique("exact")
    body = tricky_body(tag)
    qid, data, _ = deliver(relay, smtp, body, user=tag,
                           params=" BODY=8BITMIME")
    rp, dt, rcv, rest = h.split_delivered(data)
    assert rp == "sender@example.org"
    assert dt == "%s@example.test" % tag
    h.check_received(rcv, "client.test", "ESMTP", qid)
    assert rest == body


def test_delivered_file_prologue_exact(relay, smtp):
    tag = h.unique("prologue")
    body = h.simple_body(tag)
    qid, data, _ = deliver(relay, smtp, body, user=tag,
                           sender="s@example.org")
    prologue = ("Return-Path: <s@example.org>\r\n"
                "Delivered-To: %s@example.test\r\nReceived: from client.test ("
                % tag).encode()
    assert data.startswith(prologue), data[:300]
    assert data.endswith(b"\r\n" + body)


def test_null_sender_return_path(relay, smtp):
    qid, data, _ = deliver(relay, smtp, h.simple_body("null"), sender="")
    assert data.startswith(b"Return-Path: <>\r\n"), data[:100]


def test_empty_message(relay, smtp):
    user = h.unique("empty")
    c = smtp()
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    c.expect("RCPT TO:<%s@example.test>" % user, 250, "2.1.5")
    c.expect("DATA", 354)
    c.send(".\r\n")
    r = c.reply()
    assert r.is_(250, "2.0.0") and r.queue_id, r
    f = h.wait_delivered(relay, "example.test", user)[0]
    assert h.split_delivered(f.read_bytes())[3] == b""


def test_mailbox_name_lowercased(relay, smtp):
    tag = h.unique("Case")
    user = "MiXeD.%s" % tag
    body = h.simple_body(tag)
    c = smtp()
    c.message("a@example.org", ["%s@example.test" % user], body, ehlo="c.test")
    files = h.wait_delivered(relay, "example.test", user.lower())
    assert not (relay.maildir / "example.test" / user).exists() \
        or user == user.lower()
    assert h.split_delivered(files[0].read_bytes())[3] == body


def test_multiple_recipients_and_spool_cleanup(relay, smtp):
    tag = h.unique("multi")
    users = ["%s-%d" % (tag, i) for i in range(3)]
    body = h.simple_body(tag)
    c = smtp()
    qid = c.message("a@example.org", [u + "@example.test" for u in users],
                    body, ehlo="c.test")
    for u in users:
        f = h.wait_delivered(relay, "example.test", u)
        assert len(f) == 1
        rp, dt, rcv, rest = h.split_delivered(f[0].read_bytes())
        assert dt == u + "@example.test"
        assert rest == body
        h.check_received(rcv, "c.test", "ESMTP", qid)
    h.wait_until(lambda: qid not in h.queue_index(relay), 10,
                 what="queue file %s to disappear" % qid)
    for u in users:
        assert h.all_files(relay.maildir / "example.test" / u / "tmp") == []
        assert (relay.maildir / "example.test" / u / "cur").is_dir()


def test_two_messages_same_user_unique_names(relay, smtp):
    user = h.unique("twice")
    c = smtp()
    c.ehlo()
    q1 = c.message("a@example.org", [user + "@example.test"],
                   h.simple_body(user + "-1"))
    q2 = c.message("a@example.org", [user + "@example.test"],
                   h.simple_body(user + "-2"))
    assert q1 != q2
    files = h.wait_delivered(relay, "example.test", user, count=2)
    assert len(files) == 2 and files[0].name != files[1].name


def test_message_split_into_tiny_writes(relay, smtp):
    user = h.unique("tiny")
    body = b"Subject: tiny\r\n\r\n.dot\r\n..two\r\nend\r\n"
    c = smtp()
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    c.expect("RCPT TO:<%s@example.test>" % user, 250, "2.1.5")
    c.expect("DATA", 354)
    wire = h.dot_stuff(body) + b".\r\n"
    for i in range(len(wire)):
        c.send(wire[i:i + 1])
        if i % 7 == 0:
            assert c.quiet(0.01) == b"", "reply before the end of data"
    r = c.reply()
    assert r.is_(250, "2.0.0") and r.queue_id, r
    f = h.wait_delivered(relay, "example.test", user)[0]
    assert h.split_delivered(f.read_bytes())[3] == body


def test_data_and_quit_pipelined(relay, smtp):
    user = h.unique("dq")
    c = smtp()
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    c.expect("RCPT TO:<%s@example.test>" % user, 250, "2.1.5")
    c.expect("DATA", 354)
    c.send(h.dot_stuff(h.simple_body(user)) + b".\r\nQUIT\r\n")
    r1, r2 = c.replies(2)
    assert r1.is_(250, "2.0.0") and r1.queue_id, r1
    assert r2.is_(221, "2.0.0"), r2
    assert c.wait_closed(5)
    h.wait_delivered(relay, "example.test", user)


# --- bare CR / LF and smuggling --------------------------------------------

@pytest.mark.parametrize("bad", [
    b"bare LF here\nand more\r\n",
    b"bare CR here\rand more\r\n",
    b"ends with bare LF\n",
    b"CR CR LF\r\r\n",
    b"LF CR\n\r\n",
])
def test_bare_cr_lf_refused(relay, smtp, bad):
    tag = h.unique("bare")
    body = ("Subject: %s\r\n\r\n" % tag).encode() + bad + b"ok\r\n"
    c = smtp()
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    c.expect("RCPT TO:<%s@remote.example>" % tag, 250, "2.1.5")
    c.expect("RCPT TO:<%s@example.test>" % tag, 250, "2.1.5")
    c.expect("DATA", 354)
    c.send(body + b".\r\n")
    r = c.reply()
    assert r.is_(550, "5.6.0"), r
    c.expect("NOOP", 250, "2.0.0")
    assert c.quiet(0.3) == b""
    h.assert_not_stored(relay, tag)
    # the session goes on: a clean message is accepted
    c.message("a@example.org", [tag + "-clean@example.test"],
              h.simple_body(tag + "-clean"))


@pytest.mark.parametrize("fake_end", [b"\n.\n", b"\r.\r", b"\n.\r\n",
                                      b"\r\n.\n"],
                         ids=["LF.LF", "CR.CR", "LF.CRLF", "CRLF.LF"])
def test_smuggling(relay, smtp, fake_end):
    tag = h.unique("smug")
    victim = "victim-" + tag
    payload = (
        ("Subject: %s\r\n\r\nfirst part\r\n" % tag).encode()
        + b"first part ends" + fake_end
        + b"MAIL FROM:<x@y.example>\r\n"
        + ("RCPT TO:<%s@example.test>\r\n" % victim).encode()
        + b"DATA\r\n"
        + ("Subject: smuggled %s\r\n\r\nsmuggled\r\n" % tag).encode()
    )
    c = smtp()
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    c.expect("RCPT TO:<%s@example.test>" % tag, 250, "2.1.5")
    c.expect("DATA", 354)
    c.send(payload + b".\r\n")
    c.send(b"NOOP\r\n")
    got = [c.reply()]
    got.append(c.reply())
    assert got[0].is_(550, "5.6.0"), got
    assert got[1].is_(250, "2.0.0") and not got[1].queue_id, got
    extra = c.quiet(0.5)
    assert extra == b"", "extra replies after the data: %r" % extra
    h.assert_not_stored(relay, tag)
    # the session still works
    after = h.unique("after")
    c.message("a@example.org", [after + "@example.test"],
              h.simple_body(after))
    h.wait_delivered(relay, "example.test", after)
    h.barrier(relay)
    assert not (relay.maildir / "example.test" / victim).exists(), \
        "smuggled message delivered to %s" % victim
    assert not h.files_containing(relay.maildir, tag)


# --- real clients ------------------------------------------------------------

def test_smtplib_sendmail(relay):
    tag = h.unique("lib")
    rcpts = ["%s-%d@example.test" % (tag, i) for i in range(2)]
    msg = h.simple_body(tag)
    with smtplib.SMTP(h.HOST, relay.port("main"), "lib.client.test",
                      timeout=10) as s:
        refused = s.sendmail("lib@example.org", rcpts, msg)
        assert refused == {}
    for r in rcpts:
        f = h.wait_delivered(relay, "example.test", r.split("@")[0])[0]
        rp, dt, rcv, rest = h.split_delivered(f.read_bytes())
        assert rest == msg
        assert rcv.startswith(b"Received: from lib.client.test (")


def test_swaks_pipelined(relay):
    tag = h.unique("swaks")
    r = subprocess.run(
        ["swaks", "--server", "%s:%d" % (h.HOST, relay.port("main")),
         "--pipeline", "--ehlo", "swaks.client.test",
         "--from", "swaks@example.org", "--to", tag + "@example.test",
         "--header", "Subject: " + tag, "--body", "via swaks " + tag],
        capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "queued as" in r.stdout, r.stdout
    f = h.wait_delivered(relay, "example.test", tag)[0]
    assert b"via swaks " + tag.encode() in f.read_bytes()


def test_client_vanishes_after_queued(relay):
    # the queued message outlives its session: the client closes without
    # QUIT right after 250 (or even before reading it)
    mark = relay.log_mark()
    tag = h.unique("gone")
    acked = []
    for i in range(20):
        users = ["%s-%d-%s" % (tag, i, k) for k in "ab"]
        c = h.SMTPConn(relay.port("main"))
        c.send("EHLO gone.test\r\nMAIL FROM:<g@example.org>\r\n"
               "RCPT TO:<%s@example.test>\r\nRCPT TO:<%s@example.test>\r\n"
               "DATA\r\n" % tuple(users))
        assert [r.code for r in c.replies(5)] == [250, 250, 250, 250, 354]
        c.send(h.dot_stuff(h.simple_body(users[0])) + b".\r\n")
        if i % 2 == 0:
            r = c.reply()
            assert r.is_(250, "2.0.0") and r.queue_id, r
            acked.extend(users)
        c.close()
    for u in acked:
        h.wait_delivered(relay, "example.test", u)
    h.barrier(relay)
    for u in acked:
        assert len(h.mailbox_files(relay, "example.test", u)) == 1, u
    relay.assert_no_crash(mark)


@pytest.mark.parametrize("mode", ["data", "bdat"])
def test_client_gone_mid_message_leaves_nothing(relay, smtp, mode):
    mark = relay.log_mark()
    tag = h.unique("midgone")
    c = smtp()
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    c.expect("RCPT TO:<%s@example.test>" % tag, 250, "2.1.5")
    c.expect("RCPT TO:<%s@remote.example>" % tag, 250, "2.1.5")
    # over 256 KB: more than the spool keeps whole in memory
    part = ("Subject: %s\r\n\r\n" % tag).encode() + b"x" * 400000 + b"\r\n"
    if mode == "data":
        c.expect("DATA", 354)
        c.send(part)
    else:
        c.send(b"BDAT 1000000 LAST\r\n" + part)
    h.wait_until(lambda: h.files_containing(relay.spool, tag), 5,
                 what="the partial message to reach the spool")
    c.close()
    # the worker is alive: it removes the partial file itself
    h.assert_not_stored(relay, tag, timeout=5)
    assert not h.incoming_files(relay)
    relay.assert_no_crash(mark)
