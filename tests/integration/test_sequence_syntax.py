"""
Command sequence errors (503 5.5.1) and the syntax of MAIL/RCPT: paths,
parameters, SMTPUTF8 (RFC 5321 4.1.2, RFC 6531, RFC 3461).
Each case runs on a fresh connection so relay_max_errors never interferes.
"""

import pytest

import relayharness as h


# --- sequence --------------------------------------------------------------

def test_mail_before_helo(smtp):
    c = smtp()
    c.expect("MAIL FROM:<a@example.org>", 503, "5.5.1")
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")


def test_rcpt_before_mail(smtp):
    c = smtp()
    c.ehlo()
    c.expect("RCPT TO:<u@example.test>", 503, "5.5.1")


def test_data_before_mail(smtp):
    c = smtp()
    c.ehlo()
    c.expect("DATA", 503, "5.5.1")
    c.expect("NOOP", 250, "2.0.0")


def test_data_before_rcpt(smtp):
    c = smtp()
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    c.expect("DATA", 503, "5.5.1")
    c.expect("NOOP", 250, "2.0.0")


def test_data_with_only_rejected_rcpts(smtp):
    c = smtp()
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    c.expect("RCPT TO:<nosuchuser@strict.test>", 550, "5.1.1")
    r = c.cmd("DATA")
    assert r.code in (503, 554) and r.code != 354, r
    c.expect("NOOP", 250, "2.0.0")


def test_nested_mail(smtp):
    c = smtp()
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    c.expect("MAIL FROM:<b@example.org>", 503, "5.5.1")
    # the first transaction is intact
    c.expect("RCPT TO:<u@example.test>", 250, "2.1.5")


# --- MAIL / RCPT syntax ---------------------------------------------------

@pytest.mark.parametrize("line", [
    "MAIL",
    "MAIL FROM",
    "MAIL FROM:",
    "MAIL TO:<a@example.org>",
    "MAIL FROM:a@example.org",
])
def test_mail_without_from_path(smtp, line):
    c = smtp()
    c.ehlo()
    c.expect(line, 501, "5.5.4")
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")


@pytest.mark.parametrize("path", [
    "noatsign",
    "a@",
    "@example.org",
    "a..b@example.org",
    ".a@example.org",
    "a.@example.org",
    "a@example..org",
    "a b@example.org",
    "a@b@example.org",
    "a@exa mple.org",
])
def test_bad_sender_mailbox(smtp, path):
    c = smtp()
    c.ehlo()
    c.expect("MAIL FROM:<%s>" % path, 501, "5.1.7")


@pytest.mark.parametrize("line", [
    "RCPT",
    "RCPT TO",
    "RCPT FROM:<u@example.test>",
    "RCPT TO:u@example.test",
])
def test_rcpt_without_to_path(smtp, line):
    c = smtp()
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    c.expect(line, 501, "5.5.4")
    c.expect("RCPT TO:<u@example.test>", 250, "2.1.5")


@pytest.mark.parametrize("path", [
    "",
    "noatsign",
    "u@",
    "@example.test",
    "u..v@example.test",
    ".u@example.test",
    "u.@example.test",
    "u@example..test",
    "u v@example.test",
    "u@@example.test",
    "u@exa mple.test",
])
def test_bad_recipient_mailbox(smtp, path):
    c = smtp()
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    c.expect("RCPT TO:<%s>" % path, 501, "5.1.3")
    c.expect("RCPT TO:<u@example.test>", 250, "2.1.5")


@pytest.mark.parametrize("params", [
    "BODY=8BITMIME",
    "BODY=7BIT",
    "body=8bitmime",
    "SIZE=100",
    "size=100",
    "SIZE=%d" % h.MAX_SIZE,
    "SMTPUTF8",
    "RET=FULL",
    "RET=HDRS ENVID=abc+2Bdef",
    "BODY=8BITMIME SIZE=5000 RET=HDRS",
])
def test_mail_parameters_accepted(smtp, params):
    c = smtp()
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org> " + params, 250, "2.1.0")


def test_null_reverse_path(smtp):
    c = smtp()
    c.ehlo()
    c.expect("MAIL FROM:<>", 250, "2.1.0")
    c.expect("RCPT TO:<u@example.test>", 250, "2.1.5")


@pytest.mark.parametrize("params", [
    "FOO=BAR",
    "FOO",
    "SIZE=abc",
    "SIZE=",
    "SIZE=-1",
    "SIZE=10 SIZE=10",
    "BODY=9BIT",
    "BODY=8BITMIME BODY=8BITMIME",
    "RET=ALL",
    "RET=FULL RET=HDRS",
    "ENVID=a=b",
    "ENVID=x ENVID=y",
    "SMTPUTF8=yes",
    "NOTIFY=SUCCESS",
])
def test_mail_bad_parameters(smtp, params):
    c = smtp()
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org> " + params, 555, "5.5.4")
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")


@pytest.mark.parametrize("params", [
    "NOTIFY=SOMETIMES",
    "NOTIFY=NEVER,SUCCESS",
    "NOTIFY=SUCCESS NOTIFY=FAILURE",
    "ORCPT=nosemicolon",
    "ORCPT=rfc822;a ORCPT=rfc822;b",
    "FOO",
    "FOO=BAR",
    "SIZE=10",
    "RET=FULL",
])
def test_rcpt_bad_parameters(smtp, params):
    c = smtp()
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    c.expect("RCPT TO:<u@example.test> " + params, 555, "5.5.4")
    c.expect("RCPT TO:<u@example.test>", 250, "2.1.5")


@pytest.mark.parametrize("params", [
    "NOTIFY=NEVER",
    "NOTIFY=SUCCESS,FAILURE,DELAY",
    "notify=failure",
    "ORCPT=rfc822;u@example.test",
    "NOTIFY=DELAY ORCPT=rfc822;u+2Bx@example.test",
])
def test_rcpt_parameters_accepted(smtp, params):
    c = smtp()
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    c.expect("RCPT TO:<u@example.test> " + params, 250, "2.1.5")


# --- valid but unusual paths ----------------------------------------------

@pytest.mark.parametrize("sender", [
    '"john doe"@example.org',
    '"a\\"b"@example.org',
    "u@[127.0.0.1]",
    "u@[IPv6:::1]",
    "first.last+tag@sub.example.org",
])
def test_unusual_valid_sender(smtp, sender):
    c = smtp()
    c.ehlo()
    c.expect("MAIL FROM:<%s>" % sender, 250, "2.1.0")


@pytest.mark.parametrize("rcpt", [
    '"john doe"@remote.example',
    '"a\\"b"@remote.example',
    "u@[192.0.2.1]",
    "u@[IPv6:2001:db8::1]",
])
def test_unusual_valid_recipient(smtp, rcpt):
    # (a literal of this host's own address: test_literals.py)
    c = smtp()
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    c.expect("RCPT TO:<%s>" % rcpt, 250, "2.1.5")
    c.expect("RSET", 250, "2.0.0")


def test_quoted_local_part_to_local_domain(smtp):
    # example.test accepts any user (relay_local_domain without users=)
    c = smtp()
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    c.expect('RCPT TO:<"john doe"@example.test>', 250, "2.1.5")


# --- SMTPUTF8 --------------------------------------------------------------

def test_utf8_sender_without_smtputf8(smtp):
    c = smtp()
    c.ehlo()
    c.expect("MAIL FROM:<jöran@example.org>", 553, "5.6.7")
    c.expect("MAIL FROM:<a@bücher.example>", 553, "5.6.7")


def test_utf8_recipient_without_smtputf8(smtp):
    c = smtp()
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    c.expect("RCPT TO:<jöran@example.test>", 553, "5.6.7")


def test_utf8_with_smtputf8_is_delivered(relay, smtp):
    c = smtp()
    c.ehlo()
    c.expect("MAIL FROM:<jöran@example.org> SMTPUTF8", 250, "2.1.0")
    c.expect("RCPT TO:<jöran@example.test>", 250, "2.1.5")
    c.expect("DATA", 354)
    body = "Subject: grüße\r\n\r\nHallo Jöran\r\n".encode()
    r = c.send_data(body)
    assert r.is_(250, "2.0.0") and r.queue_id, r
    files = h.wait_delivered(relay, "example.test", "jöran")
    rp, dt, rcv, rest = h.split_delivered(files[0].read_bytes())
    assert rp == "jöran@example.org"
    assert rest == body


def test_invalid_utf8_refused(smtp):
    c = smtp()
    c.ehlo()
    # \xc3\x28 is not UTF-8
    c.send(b"MAIL FROM:<j\xc3\x28ran@example.org> SMTPUTF8\r\n")
    r = c.reply()
    assert r.code in (501, 553), r
