"""
Stream variables in the access log ($relay_helo, $relay_sender,
$relay_rcpt_count, $relay_queue_id, $relay_tls, $relay_auth_user,
$relay_last_reply), written when the session ends.
"""

import re

import relayharness as h


LINE_RE = re.compile(
    r'^(?P<addr>\S+) helo=(?P<helo>\S*) from=(?P<from>\S*) '
    r'nrcpt=(?P<nrcpt>\S*) id=(?P<id>\S*) tls=(?P<tls>\S*) '
    r'user=(?P<user>\S*) reply="(?P<reply>[^"]*)"$')


def log_line(relay, helo):
    def find():
        for l in relay.smtp_log().splitlines():
            if " helo=%s " % helo in l:
                return l
        return None
    line = h.wait_until(find, 5, what="access log line for helo=%s" % helo)
    m = LINE_RE.match(line)
    assert m, "log line shape: %r" % line
    return m.groupdict()


def test_plain_session_logged(relay, smtp):
    helo = h.unique("logvars") + ".client.test"
    c = smtp()
    c.ehlo(helo)
    qid = c.message("lv@example.org", ["a@example.test", "b@example.test"],
                    h.simple_body("lv"))
    c.expect("QUIT", 221, "2.0.0")
    assert c.wait_closed(5)
    f = log_line(relay, helo)
    assert f["addr"] == "127.0.0.1"
    assert f["from"].strip("<>") == "lv@example.org", f
    assert f["nrcpt"] == "2", f
    assert f["id"] == qid, f
    assert f["tls"] in ("", "-", "off"), f
    assert f["user"] in ("", "-"), f
    assert f["reply"].startswith("221 2.0.0"), f


def test_last_reply_is_error(relay, smtp):
    helo = h.unique("logerr") + ".client.test"
    c = smtp()
    c.ehlo(helo)
    c.expect("MAIL FROM:<x@example.org>", 250, "2.1.0")
    c.expect("RCPT TO:<nosuchuser@strict.test>", 550, "5.1.1")
    c.close()
    f = log_line(relay, helo)
    assert f["reply"].startswith("550 5.1.1"), f
    assert f["id"] in ("", "-"), f
    assert f["nrcpt"] in ("0", "", "-"), f


def test_tls_auth_session_logged(relay, smtp):
    helo = h.unique("logtls") + ".client.test"
    user = "alice@example.test"
    c = smtp("sub")
    c.ehlo()
    c.starttls()
    c.ehlo(helo)
    c.expect("AUTH PLAIN " + h.auth_plain_token(user, h.AUTH_USERS[user]),
             235, "2.7.0")
    qid = c.message(user, ["x@remote.example"], h.simple_body("lvtls"))
    version = c.sock.version()
    c.expect("QUIT", 221, "2.0.0")
    c.wait_closed(5)
    f = log_line(relay, helo)
    assert f["tls"] in ("on", version) or f["tls"].startswith("TLS"), f
    assert f["user"] == user, f
    assert f["id"] == qid and f["nrcpt"] == "1", f
    assert h.AUTH_USERS[user] not in relay.smtp_log()
    assert h.AUTH_USERS[user] not in relay.error_log()
    assert h.auth_plain_token(user, h.AUTH_USERS[user]) \
        not in relay.error_log()


def test_timeout_logged(relay, smtp):
    helo = h.unique("logidle") + ".client.test"
    c = smtp("idle")
    c.ehlo(helo)
    assert c.reply(timeout=6).is_(421, "4.4.2")
    c.wait_closed(3)
    f = log_line(relay, helo)
    assert f["reply"].startswith("421 4.4.2"), f
