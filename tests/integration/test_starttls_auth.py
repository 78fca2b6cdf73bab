"""
STARTTLS and AUTH on the submission server: EHLO before/after TLS,
plaintext injection after STARTTLS (CVE-2011-0411 class), AUTH only after
TLS, PLAIN and LOGIN good/bad, relay rights from AUTH only, the Received:
header naming TLS, with raw sockets, smtplib, swaks and openssl s_client.
"""

import smtplib
import ssl
import subprocess

import pytest

import relayharness as h


ALICE, ALICE_PW = "alice@example.test", h.AUTH_USERS["alice@example.test"]
BOB, BOB_PW = "bob@example.test", h.AUTH_USERS["bob@example.test"]


def tls_conn(smtp):
    c = smtp("sub")
    c.ehlo("tls.client.test")
    c.starttls()
    return c


def client_ctx():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def test_starttls_and_ehlo_after(smtp):
    c = smtp("sub")
    r, ext = c.ehlo()
    assert "STARTTLS" in ext and "AUTH" not in ext, r
    c.starttls()
    r, ext = c.ehlo("tls.client.test")
    assert r.lines[0].startswith("250-relay.test"), r
    assert "STARTTLS" not in ext, "STARTTLS offered again: %r" % r
    assert "AUTH" in ext, r
    assert {"PLAIN", "LOGIN"} <= {m.upper() for m in ext["AUTH"]}, r
    for k in ("PIPELINING", "8BITMIME", "ENHANCEDSTATUSCODES", "SIZE"):
        assert k in ext, r


def test_ehlo_required_after_tls(smtp):
    c = smtp("sub")
    c.ehlo()
    c.starttls()
    c.expect("MAIL FROM:<a@example.org>", 503, "5.5.1")
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")


def test_tls_resets_transaction_state(smtp):
    # an envelope begun before STARTTLS does not survive it
    c = smtp("sub")
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    r = c.cmd("STARTTLS")
    if r.code == 220:
        c.wrap_tls()
        c.ehlo()
        c.expect("RCPT TO:<u@example.test>", 503, "5.5.1")
    else:
        assert r.code == 503, r


def test_starttls_twice_refused(smtp):
    c = tls_conn(smtp)
    c.ehlo()
    r = c.cmd("STARTTLS")
    assert r.code in (454, 502, 503, 554), r
    c.expect("NOOP", 250, "2.0.0")


def test_starttls_not_offered_on_plain_server(smtp):
    c = smtp("main")
    c.ehlo()
    r = c.cmd("STARTTLS")
    assert r.code in (454, 500, 502, 503), r
    c.expect("NOOP", 250, "2.0.0")


@pytest.mark.parametrize("port", ["sub", "lax"])
@pytest.mark.parametrize("injected", [
    b"NOOP\r\n",
    b"RSET\r\nNOOP\r\n",
    b"EHLO evil.test\r\nMAIL FROM:<evil@evil.example>\r\n",
], ids=["noop", "rset-noop", "ehlo-mail"])
def test_starttls_plaintext_injection(smtp, port, injected):
    # by default out of sync (RFC 2920 3.1): 554, closed, nothing run;
    # with relay_strict_pipelining off ("lax"): dropped, never run in TLS
    c = smtp(port)
    c.ehlo()
    c.send(b"STARTTLS\r\n" + injected)
    r = c.reply()
    if port == "sub":
        assert r.is_(554, "5.5.0"), r
        assert c.wait_closed(5)
        return
    assert r.is_(220, "2.0.0"), r
    assert c.buf == b"", "server answered injected plaintext: %r" % c.buf
    c.wrap_tls()
    # the first reply over TLS must be the one to our EHLO
    r = c.cmd("EHLO after.tls.test")
    assert r.code == 250 and r.lines[0].startswith("250-relay.test"), \
        "injected command answered after the handshake: %r" % r
    assert c.quiet(0.3) == b""
    # no MAIL transaction was opened by the injection
    c.expect("RCPT TO:<u@example.test>", 503, "5.5.1")
    c.expect("MAIL FROM:<good@example.org>", 250, "2.1.0")


def test_auth_before_tls_refused(smtp):
    c = smtp("sub")
    c.ehlo()
    c.expect("AUTH PLAIN " + h.auth_plain_token(ALICE, ALICE_PW), 530, "5.7.0")
    c.expect("AUTH LOGIN", 530, "5.7.0")
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    c.expect("RCPT TO:<x@remote.example>", 554, "5.7.1")


def test_auth_plain_good(smtp):
    c = tls_conn(smtp)
    c.ehlo()
    c.expect("AUTH PLAIN " + h.auth_plain_token(ALICE, ALICE_PW), 235, "2.7.0")
    c.expect("MAIL FROM:<%s>" % ALICE, 250, "2.1.0")
    c.expect("RCPT TO:<x@remote.example>", 250, "2.1.5")


def test_auth_plain_with_authzid(smtp):
    c = tls_conn(smtp)
    c.ehlo()
    tok = h.b64("%s\0%s\0%s" % (ALICE, ALICE, ALICE_PW))
    c.expect("AUTH PLAIN " + tok, 235, "2.7.0")


def test_auth_plain_without_initial_response(smtp):
    c = tls_conn(smtp)
    c.ehlo()
    r = c.cmd("AUTH PLAIN")
    assert r.code == 334, r
    c.expect(h.auth_plain_token(BOB, BOB_PW), 235, "2.7.0")


@pytest.mark.parametrize("user,pw", [
    (ALICE, "wrong"),
    (ALICE, BOB_PW),
    ("nobody@example.test", "x"),
])
def test_auth_plain_bad(smtp, user, pw):
    c = tls_conn(smtp)
    c.ehlo()
    c.expect("AUTH PLAIN " + h.auth_plain_token(user, pw), 535, "5.7.8")
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    c.expect("RCPT TO:<x@remote.example>", 554, "5.7.1")


def test_auth_plain_garbage(smtp):
    c = tls_conn(smtp)
    c.ehlo()
    r = c.cmd("AUTH PLAIN !!!notbase64")
    assert r.code == 501 or r.is_(535, "5.7.8"), r
    c.expect("NOOP", 250, "2.0.0")


def test_auth_cancel(smtp):
    c = tls_conn(smtp)
    c.ehlo()
    assert c.cmd("AUTH LOGIN").code == 334
    r = c.cmd("*")
    assert r.code == 501, r
    c.expect("NOOP", 250, "2.0.0")


def test_auth_login_good(smtp):
    c = tls_conn(smtp)
    c.ehlo()
    r = c.cmd("AUTH LOGIN")
    assert r.code == 334 and h.b64("Username:") in r.lines[0], r
    r = c.cmd(h.b64(BOB))
    assert r.code == 334 and h.b64("Password:") in r.lines[0], r
    c.expect(h.b64(BOB_PW), 235, "2.7.0")
    c.expect("MAIL FROM:<%s>" % BOB, 250, "2.1.0")
    c.expect("RCPT TO:<x@remote.example>", 250, "2.1.5")


def test_auth_login_bad(smtp):
    c = tls_conn(smtp)
    c.ehlo()
    assert c.cmd("AUTH LOGIN").code == 334
    assert c.cmd(h.b64(BOB)).code == 334
    c.expect(h.b64("not the password"), 535, "5.7.8")


def test_auth_login_initial_response(smtp):
    # RFC 4954 4: an initial response is allowed for any mechanism
    c = tls_conn(smtp)
    c.ehlo()
    r = c.cmd("AUTH LOGIN " + h.b64(ALICE))
    assert r.code == 334 and h.b64("Password:") in r.lines[0], r
    c.expect(h.b64(ALICE_PW), 235, "2.7.0")


def test_auth_twice_refused(smtp):
    c = tls_conn(smtp)
    c.ehlo()
    c.expect("AUTH PLAIN " + h.auth_plain_token(ALICE, ALICE_PW), 235, "2.7.0")
    r = c.cmd("AUTH PLAIN " + h.auth_plain_token(ALICE, ALICE_PW))
    assert r.is_(503, "5.5.1"), r


def test_no_relay_without_auth_over_tls(smtp):
    c = tls_conn(smtp)
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    c.expect("RCPT TO:<x@remote.example>", 554, "5.7.1")
    # local domains are still open
    c.expect("RCPT TO:<u@example.test>", 250, "2.1.5")


def test_received_esmtps(relay, smtp):
    user = h.unique("esmtps")
    c = tls_conn(smtp)
    version, cipher = c.sock.version(), c.sock.cipher()[0]
    qid = c.message("a@example.org", [user + "@example.test"],
                    h.simple_body(user), ehlo="tls.client.test")
    f = h.wait_delivered(relay, "example.test", user)[0]
    rcv = h.split_delivered(f.read_bytes())[2]
    unfolded = h.check_received(rcv, "tls.client.test", "ESMTPS", qid)
    assert version in unfolded and cipher in unfolded, \
        "TLS %s/%s not named in %r" % (version, cipher, unfolded)


def test_received_esmtpsa_and_remote_queued(relay, smtp):
    user = h.unique("esmtpsa")
    c = tls_conn(smtp)
    version, cipher = c.sock.version(), c.sock.cipher()[0]
    c.ehlo("auth.client.test")
    c.expect("AUTH PLAIN " + h.auth_plain_token(ALICE, ALICE_PW), 235, "2.7.0")
    qid = c.message(ALICE, [user + "@example.test", user + "@remote.example"],
                    h.simple_body(user))
    f = h.wait_delivered(relay, "example.test", user)[0]
    rcv = h.split_delivered(f.read_bytes())[2]
    unfolded = h.check_received(rcv, "auth.client.test", "ESMTPSA", qid)
    assert version in unfolded and cipher in unfolded, unfolded
    assert ALICE_PW not in f.read_bytes().decode("utf-8", "replace")
    h.wait_until(lambda: h.queue_file_for(relay, qid), 5,
                 what="remote part of %s queued" % qid)


# --- smtplib -------------------------------------------------------------

def test_smtplib_starttls_login_plain(relay):
    tag = h.unique("libtls")
    with smtplib.SMTP(h.HOST, relay.port("sub"), "lib.test", timeout=10) as s:
        s.starttls(context=client_ctx())
        s.ehlo("lib.test")
        assert s.has_extn("auth") and not s.has_extn("starttls")
        code, _ = s.login(ALICE, ALICE_PW)
        assert code == 235
        assert s.sendmail(ALICE, [tag + "@remote.example",
                                  tag + "@example.test"],
                          h.simple_body(tag)) == {}
    h.wait_delivered(relay, "example.test", tag)


def test_smtplib_login_mechanism(relay):
    with smtplib.SMTP(h.HOST, relay.port("sub"), "lib.test", timeout=10) as s:
        s.starttls(context=client_ctx())
        s.ehlo("lib.test")
        s.user, s.password = BOB, BOB_PW
        code, _ = s.auth("LOGIN", s.auth_login, initial_response_ok=False)
        assert code == 235
        code, _ = s.mail(BOB)
        assert code == 250
        code, _ = s.rcpt("x@remote.example")
        assert code == 250


def test_smtplib_bad_password(relay):
    with smtplib.SMTP(h.HOST, relay.port("sub"), "lib.test", timeout=10) as s:
        s.starttls(context=client_ctx())
        s.ehlo("lib.test")
        s.user, s.password = ALICE, "wrong"
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            s.auth("PLAIN", s.auth_plain)
        assert e.value.smtp_code == 535
        assert e.value.smtp_error.startswith(b"5.7.8")
        with pytest.raises(smtplib.SMTPRecipientsRefused) as e:
            s.sendmail("a@example.org", ["x@remote.example"], b"x\r\n")
        code, msg = e.value.recipients["x@remote.example"]
        assert code == 554 and msg.startswith(b"5.7.1")


def test_smtplib_login_refused_before_tls(relay):
    with smtplib.SMTP(h.HOST, relay.port("sub"), "lib.test", timeout=10) as s:
        s.ehlo()
        assert not s.has_extn("auth")
        code, msg = s.docmd("AUTH", "PLAIN " + h.auth_plain_token(ALICE,
                                                                   ALICE_PW))
        assert code == 530 and msg.startswith(b"5.7.0"), (code, msg)


# --- swaks ----------------------------------------------------------------

def swaks(relay, *args):
    return subprocess.run(
        ["swaks", "--server", "%s:%d" % (h.HOST, relay.port("sub")),
         "--ehlo", "swaks.test", "--tls"] + list(args),
        capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN"])
def test_swaks_tls_auth(relay, mech):
    tag = h.unique("swaks")
    r = swaks(relay, "--auth", mech, "--auth-user", ALICE,
              "--auth-password", ALICE_PW, "--from", ALICE,
              "--to", "%s@remote.example,%s@example.test" % (tag, tag),
              "--header", "Subject: " + tag)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "235 2.7.0" in r.stdout and "queued as" in r.stdout, r.stdout
    h.wait_delivered(relay, "example.test", tag)


def test_swaks_bad_password(relay):
    r = swaks(relay, "--auth", "PLAIN", "--auth-user", ALICE,
              "--auth-password", "wrong", "--from", ALICE,
              "--to", "x@remote.example")
    assert r.returncode != 0, r.stdout
    assert "535 5.7.8" in r.stdout, r.stdout


def test_swaks_no_auth_no_relay(relay):
    r = swaks(relay, "--from", "a@example.org", "--to", "x@remote.example")
    assert r.returncode != 0, r.stdout
    assert "554 5.7.1" in r.stdout, r.stdout


# --- openssl s_client -------------------------------------------------------

def test_openssl_s_client_starttls(relay):
    # s_client writes what it reads from a pipe at once (EHLO, AUTH, QUIT
    # pipelined): a listener with relay_strict_pipelining off
    r = subprocess.run(
        ["openssl", "s_client", "-connect",
         "%s:%d" % (h.HOST, relay.port("lax")), "-starttls", "smtp",
         "-quiet", "-ign_eof"],
        input=(b"EHLO sclient.test\r\nAUTH PLAIN "
               + h.auth_plain_token(BOB, BOB_PW).encode() + b"\r\n"
               b"QUIT\r\n"),
        capture_output=True, timeout=30)
    out = r.stdout.decode("utf-8", "replace")
    lines = out.replace("\r\n", "\n").split("\n")
    ehlo = [l for l in lines if l.startswith("250")]
    assert any(l.startswith("250-relay.test") for l in ehlo), out
    auth = [l for l in ehlo if l[4:].upper().startswith("AUTH ")]
    assert auth and {"PLAIN", "LOGIN"} <= set(auth[0][4:].upper().split()), out
    assert not any("STARTTLS" in l for l in ehlo), out
    assert any(l.startswith("235 2.7.0") for l in lines), out
    assert any(l.startswith("221 2.0.0") for l in lines), out


def test_garbage_instead_of_tls_handshake(relay, smtp):
    c = smtp("sub")
    c.ehlo()
    c.expect("STARTTLS", 220, "2.0.0")
    c.send(b"EHLO this is not a TLS ClientHello\r\n" * 20)
    assert c.wait_closed(5), "server kept a session with a failed handshake"
    # the server is fine
    c2 = smtp("sub")
    c2.ehlo()
    c2.starttls()
    c2.ehlo()
    c2.expect("NOOP", 250, "2.0.0")


def test_client_gone_during_handshake(relay, smtp):
    c = smtp("sub")
    c.ehlo()
    c.expect("STARTTLS", 220, "2.0.0")
    c.close()
    c2 = smtp("sub")
    c2.ehlo()
    c2.starttls()
    c2.expect("NOOP", 250, "2.0.0")
