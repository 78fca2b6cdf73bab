"""
CHUNKING (RFC 3030): BDAT chunks, LAST, BDAT 0 LAST, exact content (no
dot-unstuffing), pipelined chunks, the size limit, BDAT mixed with DATA.
"""

import pytest

import relayharness as h


def start(smtp, rcpt, port="main"):
    c = smtp(port)
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    c.expect("RCPT TO:<%s>" % rcpt, 250, "2.1.5")
    return c


def bdat(c, data, last=False):
    c.send(("BDAT %d%s\r\n" % (len(data), " LAST" if last else "")).encode()
           + data)
    return c.reply(timeout=30)


def delivered_body(relay, user):
    f = h.wait_delivered(relay, "example.test", user)[0]
    return h.split_delivered(f.read_bytes())


def test_bdat_chunks_exact(relay, smtp):
    user = h.unique("bdat")
    chunks = [
        ("Subject: %s\r\n\r\n" % user).encode(),
        b".leading dot is not stuffing in BDAT\r\n..two dots\r\n",
        b"a fake end\r\n.\r\nafter it\r\n",     # not an end in BDAT
        b"8bit \xe9\xff\r\nsplit li",
        b"ne across chunks\r\n",
    ]
    c = start(smtp, user + "@example.test")
    for ch in chunks[:-1]:
        r = bdat(c, ch)
        assert r.is_(250, "2.0.0") and not r.queue_id, r
    r = bdat(c, chunks[-1], last=True)
    assert r.is_(250, "2.0.0") and r.queue_id, r
    rp, dt, rcv, rest = delivered_body(relay, user)
    h.check_received(rcv, "client.test", "ESMTP", r.queue_id)
    assert rest == b"".join(chunks)


def test_bdat_zero_last_after_chunks(relay, smtp):
    user = h.unique("bdat0")
    body = ("Subject: %s\r\n\r\nzero last\r\n" % user).encode()
    c = start(smtp, user + "@example.test")
    assert bdat(c, body).is_(250, "2.0.0")
    r = bdat(c, b"", last=True)
    assert r.is_(250, "2.0.0") and r.queue_id, r
    assert delivered_body(relay, user)[3] == body


def test_bdat_zero_last_only(relay, smtp):
    user = h.unique("bdatempty")
    c = start(smtp, user + "@example.test")
    r = bdat(c, b"", last=True)
    assert r.is_(250, "2.0.0") and r.queue_id, r
    assert delivered_body(relay, user)[3] == b""


def test_bdat_single_last_chunk(relay, smtp):
    user = h.unique("bdat1")
    body = ("Subject: %s\r\n\r\none chunk\r\n" % user).encode()
    c = start(smtp, user + "@example.test")
    r = bdat(c, body, last=True)
    assert r.is_(250, "2.0.0") and r.queue_id, r
    assert delivered_body(relay, user)[3] == body


@pytest.mark.parametrize("port", ["main", "lax"])
def test_bdat_pipelined(relay, smtp, port):
    # chunks may be pipelined; after LAST's chunk the client waits (but
    # with relay_strict_pipelining off)
    user = h.unique("bdatpipe")
    a = ("Subject: %s\r\n\r\n" % user).encode()
    b = b"pipelined body\r\n"
    c = smtp(port)
    c.ehlo()
    c.send(b"MAIL FROM:<a@example.org>\r\n"
           + ("RCPT TO:<%s@example.test>\r\n" % user).encode()
           + b"BDAT %d\r\n" % len(a) + a
           + b"BDAT %d LAST\r\n" % len(b) + b
           + (b"NOOP\r\n" if port == "lax" else b""))
    rs = c.replies(5 if port == "lax" else 4)
    assert rs[0].is_(250, "2.1.0") and rs[1].is_(250, "2.1.5"), rs
    assert rs[2].is_(250, "2.0.0") and not rs[2].queue_id, rs
    assert rs[3].is_(250, "2.0.0") and rs[3].queue_id, rs
    if port == "lax":
        assert rs[4].is_(250, "2.0.0"), rs
    else:
        c.expect("NOOP", 250, "2.0.0")
    assert delivered_body(relay, user)[3] == a + b


def test_bdat_chunk_split_across_writes(relay, smtp):
    user = h.unique("bdatsplit")
    body = ("Subject: %s\r\n\r\nslow chunk\r\n" % user).encode()
    c = start(smtp, user + "@example.test")
    c.send(b"BDAT %d LAST\r\n" % len(body))
    for i in range(0, len(body), 5):
        assert c.quiet(0.02) == b"", "reply before the chunk is complete"
        c.send(body[i:i + 5])
    r = c.reply()
    assert r.is_(250, "2.0.0") and r.queue_id, r
    assert delivered_body(relay, user)[3] == body


def test_bdat_over_size_limit(relay, smtp):
    tag = h.unique("bdatbig")
    c = start(smtp, tag + "@remote.example")
    data = (b"x" * 1022 + b"\r\n") * 1024 + b"y\r\n"      # 1 MiB + 3
    r = bdat(c, data, last=True)
    assert r.is_(552, "5.3.4"), r
    c.expect("RSET", 250, "2.0.0")
    assert c.quiet(0.3) == b""
    h.assert_not_stored(relay, tag)


def test_bdat_over_size_limit_in_second_chunk(relay, smtp):
    tag = h.unique("bdatbig2")
    c = start(smtp, tag + "@remote.example")
    half = ("Subject: %s\r\n" % tag).encode() + b"z" * (600 * 1024)
    r1 = bdat(c, half)
    r2 = bdat(c, half, last=True) if r1.code == 250 else None
    # refused at the chunk that crosses the limit or at LAST
    final = r2 if r2 is not None else r1
    assert final.is_(552, "5.3.4"), (r1, r2)
    c.expect("RSET", 250, "2.0.0")
    h.assert_not_stored(relay, tag)


def test_data_after_bdat(smtp):
    c = start(smtp, "u@example.test")
    assert bdat(c, b"Subject: x\r\n\r\n").is_(250, "2.0.0")
    c.expect("DATA", 503, "5.5.1")
    c.expect("RSET", 250, "2.0.0")
    c.expect("NOOP", 250, "2.0.0")


def test_bdat_before_rcpt_consumes_chunk(smtp):
    c = smtp("lax")
    c.ehlo()
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    # the chunk looks like commands: it must be read and dropped
    chunk = b"NOOP\r\nNOOP\r\n"
    c.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk + b"RSET\r\n")
    r1, r2 = c.replies(2)
    assert r1.is_(503, "5.5.1"), r1
    assert r2.is_(250, "2.0.0"), r2
    assert c.quiet(0.3) == b"", "chunk content was executed as commands"


def test_bdat_without_mail(smtp):
    c = smtp("lax")
    c.ehlo()
    chunk = b"QUIT\r\n"
    c.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk + b"NOOP\r\n")
    r1, r2 = c.replies(2)
    assert r1.is_(503, "5.5.1"), r1
    assert r2.is_(250, "2.0.0"), r2


@pytest.mark.parametrize("arg", ["BDAT", "BDAT abc", "BDAT 10 NOTLAST",
                                 "BDAT -1", "BDAT 1 LAST LAST"])
def test_bdat_bad_argument(smtp, arg):
    # the chunk size is unknown: the server may answer and close, since
    # the octets that follow cannot be told from commands
    c = start(smtp, "u@example.test")
    c.expect(arg, 501, "5.5.4")
    try:
        r = c.cmd("NOOP", timeout=3)
        assert r.is_(250, "2.0.0") or r.code == 421, r
    except (EOFError, ConnectionError):
        pass


def test_bdat_exactly_size_limit(relay, smtp):
    user = h.unique("bdatexact")
    head = ("Subject: %s\r\n\r\n" % user).encode()
    body = head + b"q" * (h.MAX_SIZE - len(head) - 2) + b"\r\n"
    assert len(body) == h.MAX_SIZE
    c = start(smtp, user + "@example.test")
    half = len(body) // 2
    assert bdat(c, body[:half]).is_(250, "2.0.0")
    r = bdat(c, body[half:], last=True)
    assert r.is_(250, "2.0.0") and r.queue_id, r
    assert delivered_body(relay, user)[3] == body


def test_bdat_idle_timeout_mid_chunk(relay, smtp):
    tag = h.unique("bdatidle")
    c = start(smtp, tag + "@remote.example", port="idle")
    c.send(b"BDAT 100 LAST\r\n" + ("Subject: %s\r\n" % tag).encode())
    r = c.reply(timeout=6)
    assert r.is_(421, "4.4.2"), r
    assert c.wait_closed(3)
    h.assert_not_stored(relay, tag)
