"""
Abuse bounds per client address: relay_max_sessions_per_ip,
relay_max_connections_per_ip and relay_max_auth_failures_per_ip (421 4.7.0
and a warn line; other addresses unaffected); deadlines that a slow client
(a byte every few seconds, "slowloris") cannot stretch, for command lines
and for content (relay_min_data_rate); 5,000 such clients do not keep a
legitimate one from its 220 within a second; replies never echo control
characters, log lines escape what they quote.
"""

import selectors
import socket
import time

import pytest

import relayharness as h


LIMITS = """
    relay_max_sessions_per_ip 3;
    relay_max_connections_per_ip 8 1h;
    relay_max_auth_failures_per_ip 2 1h;
"""


def warn_lines(ng, text):
    return [l for l in ng.error_log().splitlines()
            if "[warn]" in l and text in l]


def test_sessions_per_ip(fresh):
    ng = fresh(stream_extra=LIMITS)
    ip = "127.0.0.7"
    held = [h.SMTPConn(ng.port("main"), source=ip) for _ in range(3)]
    for c in held:
        assert c.greeting.is_(220), c.greeting
    extra = h.SMTPConn(ng.port("main"), source=ip)
    assert extra.greeting.is_(421, "4.7.0"), extra.greeting
    assert extra.wait_closed(5)
    assert warn_lines(ng, "relay client 127.0.0.7: 4 sessions at once, more "
                          "than relay_max_sessions_per_ip 3: 421")
    # another address is another client
    other = h.SMTPConn(ng.port("main"), source="127.0.0.2")
    assert other.greeting.is_(220), other.greeting
    other.close()
    # a session that ends makes room
    held.pop().cmd("QUIT")

    def room():
        c = h.SMTPConn(ng.port("main"), source=ip)
        if c.greeting.code == 220:
            return c
        c.close()

    c = h.wait_until(room, 5, what="room for a session")
    c.expect("NOOP", 250)
    for c in held + [c]:
        c.close()


def test_connections_per_ip(fresh):
    # without relay_max_sessions_per_ip: a worker that has not yet seen
    # the previous client's close must not turn this into a sessions test
    ng = fresh(stream_extra="    relay_max_connections_per_ip 8 1h;")
    for i in range(8):
        with h.SMTPConn(ng.port("main"), source="127.0.0.3") as c:
            assert c.greeting.is_(220), (i, c.greeting)
    with h.SMTPConn(ng.port("main"), source="127.0.0.3") as c:
        assert c.greeting.is_(421, "4.7.0"), c.greeting
        assert "too many connections" in c.greeting.text
    assert warn_lines(ng, "relay client 127.0.0.3: 9 connections in 3600 s, "
                          "more than relay_max_connections_per_ip 8: 421")
    with h.SMTPConn(ng.port("main"), source="127.0.0.4") as c:
        assert c.greeting.is_(220)


def test_auth_failures_per_ip(fresh):
    ng = fresh(stream_extra=LIMITS)

    def tls(source):
        c = h.SMTPConn(ng.port("sub"), source=source)
        c.ehlo()
        c.starttls()
        c.ehlo()
        return c

    bad = "AUTH PLAIN " + h.auth_plain_token("alice@example.test", "wrong")
    c = tls("127.0.0.5")
    c.expect(bad, 535, "5.7.8")
    c.send(bad + "\r\n")
    r1, r2 = c.replies(2)
    assert r1.is_(535, "5.7.8") and r2.is_(421, "4.7.0"), (r1, r2)
    assert c.wait_closed(5)
    assert warn_lines(ng, "relay client 127.0.0.5: 2 AUTH failures in 3600 "
                          "s, relay_max_auth_failures_per_ip 2: 421")
    # the window goes on: even the right password is not tried
    c = tls("127.0.0.5")
    c.expect("AUTH PLAIN " + h.auth_plain_token("alice@example.test",
                                                "alice-secret"), 421, "4.7.0")
    # another address authenticates
    c = tls("127.0.0.6")
    c.expect("AUTH PLAIN " + h.auth_plain_token("alice@example.test",
                                                "alice-secret"), 235, "2.7.0")


def test_slow_command_line_is_timed_out(relay):
    # "idle" has relay_timeout 1s: a byte every 0.3 s never makes a line
    c = h.SMTPConn(relay.port("idle"))
    t0 = time.monotonic()
    for ch in b"EHLO slow.client.test":
        try:
            c.sock.sendall(bytes([ch]))
        except OSError:
            break
        got = c.quiet(0.3)
        if got:
            c.buf = got
            break
    r = c.reply(timeout=5)
    assert r.is_(421, "4.4.2"), r
    assert c.wait_closed(5)
    assert time.monotonic() - t0 < 3, "a trickle kept the session open"


def test_slow_data_is_timed_out(relay):
    c = h.SMTPConn(relay.port("idle"))
    c.ehlo()
    c.expect("MAIL FROM:<p@example.org>", 250)
    c.expect("RCPT TO:<slow@example.test>", 250)
    c.expect("DATA", 354)
    t0 = time.monotonic()
    try:
        for i in range(40):
            c.sock.sendall(b"x")
            got = c.quiet(0.2)
            if got:
                c.buf = got
                break
    except OSError:
        pass
    r = c.reply(timeout=5)
    assert r.is_(421, "4.4.2"), r
    assert time.monotonic() - t0 < 3, "trickled content kept the session"


def test_steady_data_is_not_timed_out(relay):
    # 2,000 octets every 0.4 s: 5,000 octets a second, well above the rate
    user = h.unique("steady")
    c = h.SMTPConn(relay.port("idle"))
    c.ehlo()
    c.expect("MAIL FROM:<p@example.org>", 250)
    c.expect("RCPT TO:<%s@example.test>" % user, 250)
    c.expect("DATA", 354)
    c.send(h.simple_body(user))
    for i in range(8):
        c.send(b"y" * 1998 + b"\r\n")
        assert c.quiet(0.4) == b""
    r = c.send_data(b"")
    assert r.is_(250, "2.0.0") and r.queue_id, r
    h.wait_delivered(relay, "example.test", user)


def test_5000_slow_clients_do_not_keep_a_client_from_its_220(relay):
    n = 5000
    sel = selectors.DefaultSelector()
    socks = []
    try:
        for i in range(n):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex((h.HOST, relay.port("idle")))
            socks.append(s)
            sel.register(s, selectors.EVENT_WRITE)
            if i % 500 == 499:
                time.sleep(0.05)         # the accept queue drains
        # each sends one byte of a line it never ends
        pending = set(socks)
        deadline = time.monotonic() + 20
        while pending and time.monotonic() < deadline:
            for key, _ in sel.select(0.5):
                s = key.fileobj
                if s in pending:
                    try:
                        s.send(b"E")
                    except OSError:
                        pass
                    pending.discard(s)
                    sel.unregister(s)
        assert len(pending) < n // 100, "%d never connected" % len(pending)

        t0 = time.monotonic()
        with h.SMTPConn(relay.port("main"), timeout=5) as c:
            elapsed = time.monotonic() - t0
            assert c.greeting.is_(220), c.greeting
        assert elapsed < 1.0, "220 after %.2f s" % elapsed

        # and the slow ones are gone after their deadline (1 s here)
        def closed():
            done = 0
            for s in socks:
                try:
                    d = s.recv(4096)
                    if d == b"":
                        done += 1
                except BlockingIOError:
                    pass
                except OSError:
                    done += 1
            return done
        h.wait_until(lambda: closed() >= n * 0.99, 30,
                     what="the slow clients to be closed")
    finally:
        for s in socks:
            s.close()


def test_replies_and_logs_quote_safely(relay, smtp):
    c = smtp()
    c.ehlo()
    c.send(b"MAIL FROM:<a\x1b[31m@example.org>\r\n"
           b"HELO bad\x07name\r\nXFOO \x00\x01\r\n")
    for r in c.replies(3):
        assert all(0x20 <= ord(ch) < 0x7f for l in r.lines for ch in l), r
    c.ehlo()
    c.send(b"QUIT\r\nEVIL\x1b[2J\r\n")
    assert c.reply().is_(554, "5.5.0")
    log = relay.error_log()
    assert "EVIL\\x1b[2J\\x0d\\x0a" in log, log[-1500:]
    assert "\x1b" not in log
