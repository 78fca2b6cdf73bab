"""
DKIM signing at acceptance (relay_dkim; the policy's "dkim" statement).

Keys made here with openssl; every signed message that reaches the sink
is verified by an independent verifier, python3-dkim's (dkimpy), with a
DNS function that answers from the test's own public keys.  Domains:
  rsa.test     RSA-2048, relaxed/relaxed (the default), x= after 7 days
  ed.test      Ed25519, simple/simple
  two.test     two keys: RSA-1024 relaxed/simple, Ed25519 simple/relaxed
  fb.test      RSA, fallback=envelope: signs for the envelope sender too
  big.test     RSA, on_error=defer (the default); bigsend.test on_error=send
  anything else: no key, not signed
"""

import base64
import os
import subprocess

import pytest

import relayharness as h
import deliveryharness as dh

dkim = pytest.importorskip("dkim", reason="python3-dkim is not installed")


if not os.path.exists(h.RELAY_MODULE):
    pytest.skip("relay module not built: %s" % h.RELAY_MODULE,
                allow_module_level=True)


def make_keys(d):
    def run(*args):
        return subprocess.run(["openssl"] + list(args), check=True,
                              capture_output=True, cwd=str(d)).stdout
    keys = {}
    for name, algo in (("rsa", ["-algorithm", "RSA", "-pkeyopt",
                                "rsa_keygen_bits:2048"]),
                       ("rsa1024", ["-algorithm", "RSA", "-pkeyopt",
                                    "rsa_keygen_bits:1024"]),
                       ("ed", ["-algorithm", "ED25519"])):
        run("genpkey", *algo, "-out", name + ".pem")
        der = run("pkey", "-in", name + ".pem", "-pubout", "-outform", "DER")
        if name == "ed":
            txt = "v=DKIM1; k=ed25519; p=" + base64.b64encode(der[-32:]).decode()
        else:
            txt = "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()
        keys[name] = (str(d / (name + ".pem")), txt)
        os.chmod(str(d / (name + ".pem")), 0o600)   # the master reads it
    return keys


SELECTORS = {}          # "sel._domainkey.domain." -> TXT


def dnsfunc(name, timeout=5):
    if isinstance(name, bytes):
        name = name.decode()
    return SELECTORS.get(name.rstrip(".") + ".", "").encode() or None


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("dkim-keys")
    k = make_keys(d)
    for sel, dom, key in (("s1", "rsa.test", "rsa"),
                          ("ed", "ed.test", "ed"),
                          ("a", "two.test", "rsa1024"),
                          ("b", "two.test", "ed"),
                          ("fb", "fb.test", "rsa"),
                          ("big", "big.test", "rsa"),
                          ("big", "bigsend.test", "rsa")):
        SELECTORS["%s._domainkey.%s." % (sel, dom)] = k[key][1]
    return k


@pytest.fixture(scope="module")
def sink():
    P = dh.alloc_port(["127.0.0.13"])
    s = dh.Sink("127.0.0.13", P, "dkim-sink")
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def relay(keys, sink, tmp_path_factory, certs):
    prefix = h.make_prefix(tmp_path_factory.mktemp("dkimrelay"), certs)
    lines = dh.conf_lines(1, sink.port, routes=[("*", "[127.0.0.13]")],
                          extra=[
        "relay_dkim rsa.test selector=s1 key=%s expire=7d;" % keys["rsa"][0],
        "relay_dkim ed.test selector=ed key=%s algorithm=ed25519-sha256 "
        "canonicalization=simple/simple;" % keys["ed"][0],
        "relay_dkim two.test selector=a key=%s "
        "canonicalization=relaxed/simple;" % keys["rsa1024"][0],
        "relay_dkim two.test selector=b key=%s algorithm=ed25519-sha256 "
        "canonicalization=simple/relaxed;" % keys["ed"][0],
        "relay_dkim fb.test selector=fb key=%s fallback=envelope;"
        % keys["rsa"][0],
        "relay_dkim big.test selector=big key=%s;" % keys["rsa"][0],
        "relay_dkim bigsend.test selector=big key=%s on_error=send;"
        % keys["rsa"][0],
    ])
    ng = h.launch_at(prefix, workers=2, stream_extra=dh.stream_extra(lines))
    yield ng
    ng.stop()
    ng.assert_log_clean()
    ng.assert_no_crash()


def send(ng, sender, rcpt, body, params=""):
    with h.SMTPConn(ng.port("main")) as c:
        c.ehlo("client.test")
        assert c.cmd("MAIL FROM:<%s>%s" % (sender, params)).code == 250
        assert c.cmd("RCPT TO:<%s>" % rcpt).code == 250
        assert c.cmd("DATA").code == 354
        r = c.send_data(body)
        c.cmd("QUIT")
        return r


def relayed(sink, marker):
    return bytes(sink.wait_accepted(marker)[0].data)


def verify_all(msg):
    """Each DKIM-Signature of msg, verified; returns their d= values."""
    d = dkim.DKIM(msg)
    n = msg.count(b"\r\nDKIM-Signature:") + msg.startswith(b"DKIM-Signature:")
    out = []
    for i in range(n):
        assert d.verify(idx=i, dnsfunc=dnsfunc), \
            "signature %d does not verify:\n%r" % (i, msg[:3000])
        out.append(d.domain.decode())
    return out


def message(domain, marker, body, extra=b""):
    return (b"From: Sender Name <sender@" + domain.encode() + b">\r\n"
            b"To: <r@remote.test>\r\nSubject: dkim " + marker.encode()
            + b"\r\nDate: Thu, 03 Dec 2026 10:00:00 +0000\r\n"
            + b"Message-ID: <" + marker.encode() + b"@client.test>\r\n"
            + extra + b"\r\n" + body)


BODIES = {
    "plain": b"hello\r\n",
    "dots": b".leading dot\r\n..two dots\r\n.\r\nend\r\n",
    "8bit": "gr\u00fc\u00dfe aus M\u00fcnchen \u2603\r\n".encode(),
    "long": b"x" * 990 + b"\r\n" + b"y" * 500 + b" \t  z\r\n",
    "trailing": b"text  \t\r\n\r\n\r\n  \r\n\r\n",
    "crlf": b"\r\n",
    "spaces": b"a  b\t\tc   \r\n \r\n\td\r\n",
}


@pytest.mark.parametrize("domain", ["rsa.test", "ed.test", "two.test"])
@pytest.mark.parametrize("kind", sorted(BODIES))
def test_signed_and_verified(relay, sink, domain, kind):
    m = h.unique("dk")
    params = " BODY=8BITMIME" if kind == "8bit" else ""
    r = send(relay, "u@" + domain, m + "@remote.test",
             message(domain, m, BODIES[kind]), params)
    assert r.code == 250, r
    msg = relayed(sink, m)
    assert msg.startswith(b"DKIM-Signature: v=1; a="), msg[:200]
    domains = verify_all(msg)
    assert domains == [domain] * (2 if domain == "two.test" else 1)
    if domain == "rsa.test":
        assert b" x=" in msg.split(b"\r\n\r\n")[0]


def test_canonicalizations_named(relay, sink):
    m = h.unique("dkc")
    send(relay, "u@two.test", m + "@remote.test",
         message("two.test", m, b"body\r\n"))
    head = relayed(sink, m).split(b"\r\n\r\n")[0]
    assert b"a=rsa-sha256; c=relaxed/simple; d=two.test; s=a;" in head
    assert b"a=ed25519-sha256; c=simple/relaxed; d=two.test;" in head
    # From is signed twice (against a From: added later), To once
    assert b"h=from:from:subject:date:to" in head.replace(b"\r\n\t ", b"")


def test_from_added_later_breaks_signature(relay, sink):
    m = h.unique("dka")
    send(relay, "u@rsa.test", m + "@remote.test",
         message("rsa.test", m, b"body\r\n"))
    msg = relayed(sink, m)
    assert dkim.verify(msg, dnsfunc=dnsfunc)
    head, body = msg.split(b"\r\n\r\n", 1)
    forged = head + b"\r\nFrom: <evil@rsa.test>\r\n\r\n" + body
    assert not dkim.verify(forged, dnsfunc=dnsfunc)


def test_large_message_signed_in_chunks(relay, sink):
    """300 KB: the body is hashed as it is written 64 KB at a time, the
    signature goes into the room the spool kept after the envelope."""
    m = h.unique("dkl")
    body = b"".join(b"line %06d of a large message  \r\n" % i
                    for i in range(9000))
    r = send(relay, "u@rsa.test", m + "@remote.test",
             message("rsa.test", m, body))
    assert r.code == 250, r
    msg = relayed(sink, m)
    assert len(msg) > 300000
    assert verify_all(msg) == ["rsa.test"]


def test_bdat_without_final_crlf(relay, sink):
    m = h.unique("dkb")
    data = message("ed.test", m, b"no line end at the end")
    with h.SMTPConn(relay.port("main")) as c:
        c.ehlo("client.test")
        assert c.cmd("MAIL FROM:<u@ed.test>").code == 250
        assert c.cmd("RCPT TO:<%s@remote.test>" % m).code == 250
        c.send(b"BDAT %d LAST\r\n" % len(data) + data)
        assert c.reply().code == 250
    assert verify_all(relayed(sink, m)) == ["ed.test"]


def test_envelope_fallback(relay, sink):
    m = h.unique("dkf")
    send(relay, "list@fb.test", m + "@remote.test",
         message("nokey.test", m, b"body\r\n"))
    msg = relayed(sink, m)
    assert verify_all(msg) == ["fb.test"]


def test_no_fallback_without_the_flag(relay, sink):
    m = h.unique("dkn")
    send(relay, "u@rsa.test", m + "@remote.test",
         message("nokey.test", m, b"body\r\n"))
    assert b"DKIM-Signature" not in relayed(sink, m)


def test_domain_without_key_unsigned(relay, sink):
    m = h.unique("dku")
    r = send(relay, "u@nokey.test", m + "@remote.test",
             message("nokey.test", m, b"body\r\n"))
    assert r.code == 250
    msg = relayed(sink, m)
    assert b"DKIM-Signature" not in msg
    assert msg.startswith(b"Received: ")
    # no room left behind in the queue file either (small message)


def test_outside_mail_for_local_domain_unsigned(relay):
    """The "untrusted" listener trusts no network: mail for a local domain
    from there is inbound mail, never signed."""
    m = h.unique("dko")
    with h.SMTPConn(relay.port("untrusted")) as c:
        c.ehlo("outside.test")
        assert c.cmd("MAIL FROM:<x@rsa.test>").code == 250
        assert c.cmd("RCPT TO:<listed@example.test>").code == 250
        assert c.cmd("DATA").code == 354
        assert c.send_data(message("rsa.test", m, b"hi\r\n")).code == 250
    box = relay.prefix / "maildir" / "example.test" / "listed" / "new"
    got = []
    h.wait_until(lambda: got.extend(p for p in box.glob("*")
                                    if m.encode() in p.read_bytes()) or got,
                 what="local delivery")
    assert b"DKIM-Signature" not in got[0].read_bytes()


def huge_header(domain, marker):
    # over 256 KB: more than the spool keeps in memory, so its first
    # buffer (64 KB) goes out before the header block ends
    extra = b"".join(b"X-Filler-%05d: %s\r\n" % (i, b"f" * 60)
                     for i in range(4000))
    return message(domain, marker, b"body\r\n", extra)


def test_unsignable_message_defers_by_default(relay, sink):
    m = h.unique("dkd")
    r = send(relay, "u@big.test", m + "@remote.test", huge_header("big.test", m))
    assert r.code == 451 and r.enh == "4.3.0", r
    assert "signed" in r.text
    assert "DKIM signing failed" in relay.error_log()


def test_unsignable_message_sent_with_on_error_send(relay, sink):
    m = h.unique("dks")
    r = send(relay, "u@bigsend.test", m + "@remote.test",
             huge_header("bigsend.test", m))
    assert r.code == 250, r
    assert b"DKIM-Signature" not in relayed(sink, m)


def test_queued_line_names_signatures(relay, sink):
    m = h.unique("dkq")
    r = send(relay, "u@two.test", m + "@remote.test",
             message("two.test", m, b"body\r\n"))
    line = [l for l in relay.error_log().splitlines()
            if r.queue_id + ": queued" in l][0]
    assert "dkim=two.test:a,two.test:b" in line, line


def test_missing_key_fails_nginx_t():
    err = dh.nginx_t(["relay_dkim x.test selector=s key=/nonexistent/k.pem;"])
    assert err and "relay_dkim: dkim[0].key_file: cannot read " \
        "\"/nonexistent/k.pem\": No such file or directory" in err, err


def test_wrong_key_type_fails_nginx_t(keys):
    err = dh.nginx_t(["relay_dkim x.test selector=s key=%s "
                      "algorithm=ed25519-sha256;" % keys["rsa"][0]])
    assert err and "is not an Ed25519 key" in err, err


def test_bad_statement_fails_nginx_t():
    err = dh.nginx_t(["relay_dkim x.test key=/k.pem;"])
    assert err and "relay_dkim: dkim: missing parameter \"selector=\"" \
        in err, err
