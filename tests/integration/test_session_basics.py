"""
Greeting, EHLO/HELO and the simple verbs (NOOP, RSET, QUIT, VRFY, HELP,
EXPN, unknown), on the main and the submission servers.
"""

import re

import pytest

import relayharness as h


BASE_EXTENSIONS = ["PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES",
                   "SMTPUTF8", "CHUNKING", "DSN"]


def test_greeting(smtp):
    c = smtp()
    assert re.match(r"^220[ -]relay\.test ESMTP( |$)", c.greeting.lines[0]), \
        c.greeting


def test_ehlo_extensions_plain_server(smtp):
    c = smtp()
    r, ext = c.ehlo("client.test")
    assert re.match(r"^250-relay\.test( |$)", r.lines[0]), r
    assert ext.get("SIZE") == [str(h.MAX_SIZE)], r
    for k in BASE_EXTENSIONS:
        assert k in ext, "%s missing from %r" % (k, r)
    assert "STARTTLS" not in ext, r
    assert "AUTH" not in ext, r


def test_ehlo_submission_before_tls(smtp):
    c = smtp("sub")
    r, ext = c.ehlo("client.test")
    assert re.match(r"^250-relay\.test( |$)", r.lines[0]), r
    assert "STARTTLS" in ext, r
    assert "AUTH" not in ext, "AUTH offered before TLS: %r" % r
    assert "SIZE" in ext, r
    for k in BASE_EXTENSIONS:
        assert k in ext, "%s missing from %r" % (k, r)


def test_helo(smtp):
    c = smtp()
    r = c.cmd("HELO client.test")
    assert r.code == 250 and len(r.lines) == 1, r
    assert re.match(r"^250 relay\.test( |$)", r.lines[0]), r
    # HELO is enough to start a transaction
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")


@pytest.mark.parametrize("line,code,enh", [
    ("NOOP", 250, "2.0.0"),
    ("noop", 250, "2.0.0"),
    ("NOOP some argument", 250, "2.0.0"),
    ("RSET", 250, "2.0.0"),
    ("HELP", 214, "2.0.0"),
    ("EXPN staff", 502, "5.5.1"),
    ("EXPN postmaster@example.test", 502, "5.5.1"),
    ("FOOBAR", 500, "5.5.2"),
    ("XYZZY with args", 500, "5.5.2"),
])
def test_simple_verbs(smtp, line, code, enh):
    c = smtp()
    c.ehlo()
    c.expect(line, code, enh)
    c.expect("NOOP", 250, "2.0.0")


def test_simple_verbs_before_ehlo(smtp):
    c = smtp()
    c.expect("NOOP", 250, "2.0.0")
    c.expect("RSET", 250, "2.0.0")
    c.expect("HELP", 214, "2.0.0")


def test_vrfy_discloses_nothing(smtp):
    c = smtp()
    c.ehlo()
    texts = []
    for arg in ["listed@strict.test", "nosuchuser@strict.test",
                "anyone@example.test", "listed", "nosuchuser"]:
        r = c.expect("VRFY " + arg, 252, "2.5.0")
        texts.append(r.text.replace(arg, "ARG"))
    assert len(set(texts)) == 1, \
        "VRFY answers differ between existing and unknown users: %r" % texts


def test_rset_clears_transaction(smtp):
    c = smtp()
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    c.expect("RCPT TO:<u@example.test>", 250, "2.1.5")
    c.expect("RSET", 250, "2.0.0")
    c.expect("RCPT TO:<u@example.test>", 503, "5.5.1")
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")


def test_quit_closes(smtp):
    c = smtp()
    c.ehlo()
    c.expect("QUIT", 221, "2.0.0")
    assert c.wait_closed(5), "server did not close after 221"
    assert c.buf == b"", "data after 221: %r" % c.buf


def test_second_ehlo_resets_transaction(smtp):
    c = smtp()
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    c.ehlo("again.test")
    # RFC 5321 4.1.4: EHLO implies RSET
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")


def test_many_idle_sessions_do_not_block(relay):
    idle = []
    try:
        for _ in range(300):
            idle.append(h.SMTPConn(relay.port("main")))
        with h.SMTPConn(relay.port("main")) as c:
            user = h.unique("busy")
            c.message("a@example.org", [user + "@example.test"],
                      h.simple_body(user), ehlo="busy.test")
        h.wait_delivered(relay, "example.test", user, timeout=5)
        for c in idle[::50]:
            c.expect("NOOP", 250, "2.0.0")
    finally:
        for c in idle:
            c.close()
