"""
Inbound sending limits (relay_limit): messages and recipients per window,
per client address, authenticated user and sender domain, counted in shared
memory across workers.  Over a message limit: 450 4.7.1 at MAIL; over a
recipient limit: 452 4.5.3 at RCPT; both logged as "relay limit: ..." and
neither counts as a session error.
"""

import time

import pytest

import relayharness as h


LIMITS = """
    relay_limit client_ip 127.0.0.3 window=1h messages=3;
    relay_limit client_ip 127.0.0.4 window=3s messages=2;
    relay_limit sender_domain counted.example window=1h recipients=4;
    relay_limit sender_domain .sub.example window=1h messages=2;
    relay_limit auth_user alice@example.test window=1h messages=2;
"""


@pytest.fixture(scope="module")
def limited(tmp_path_factory, certs):
    ng = h.launch(tmp_path_factory, certs, "limits", workers=2,
                  stream_extra=LIMITS)
    yield ng
    ng.stop()
    ng.assert_log_clean()


def connect(ng, source, port="main"):
    """An SMTP session from a chosen loopback source address."""
    return h.SMTPConn(ng.port(port), source=source)


def send_one(c, sender, rcpts, tag):
    r = c.cmd("MAIL FROM:<%s>" % sender)
    if not r.is_(250):
        return r
    for rc in rcpts:
        rr = c.cmd("RCPT TO:<%s>" % rc)
        assert rr.is_(250, "2.1.5"), rr
    c.expect("DATA", 354)
    r = c.send_data(h.simple_body(tag))
    assert r.is_(250, "2.0.0"), r
    return r


def test_client_limit_answers_450_exactly_at_the_boundary(limited):
    c = connect(limited, "127.0.0.3")
    c.ehlo()
    for i in range(3):
        r = send_one(c, "a@example.org", ["u%d@example.test" % i],
                     h.unique("cl"))
        assert r.is_(250, "2.0.0"), (i, r)
    r = c.cmd("MAIL FROM:<a@example.org>")
    assert r.is_(450, "4.7.1"), r
    # not an error of the session: it goes on, and RSET/NOOP work
    c.expect("NOOP", 250)
    r = c.cmd("MAIL FROM:<a@example.org>")
    assert r.is_(450, "4.7.1"), r
    c.close()

    # another client address is not affected, in either worker
    for _ in range(3):
        c2 = connect(limited, "127.0.0.5")
        c2.ehlo()
        r = send_one(c2, "a@example.org", ["x@example.test"], h.unique("o"))
        assert r.is_(250, "2.0.0"), r
        c2.close()

    # counted across workers: new connections from .3 stay refused
    for _ in range(4):
        c3 = connect(limited, "127.0.0.3")
        c3.ehlo()
        r = c3.cmd("MAIL FROM:<a@example.org>")
        assert r.is_(450, "4.7.1"), r
        c3.close()

    h.wait_until(lambda: "relay limit: 127.0.0.3 reached 3 messages per "
                 "3600 s (inbound_limit client_ip 127.0.0.3)"
                 in limited.error_log(), what="relay limit log line")


def test_client_limit_recovers_after_the_window(limited):
    # start right after a window boundary (windows are aligned to 3 s)
    while time.time() % 3 > 0.3:
        time.sleep(0.05)
    c = connect(limited, "127.0.0.4")
    c.ehlo()
    for i in range(2):
        r = send_one(c, "a@example.org", ["w%d@example.test" % i],
                     h.unique("win"))
        assert r.is_(250, "2.0.0"), r
    r = c.cmd("MAIL FROM:<a@example.org>")
    assert r.is_(450, "4.7.1"), r
    # the next window
    while time.time() % 3 < 2.9:
        time.sleep(0.05)
    time.sleep(0.3)
    r = send_one(c, "a@example.org", ["w9@example.test"], h.unique("win"))
    assert r.is_(250, "2.0.0"), r
    c.close()


def test_recipient_limit_answers_452_and_keeps_the_accepted(limited):
    c = connect(limited, "127.0.0.6")
    c.ehlo()
    c.expect("MAIL FROM:<s@counted.example>", 250, "2.1.0")
    accepted = 0
    for i in range(5):
        r = c.cmd("RCPT TO:<r%d@example.test>" % i)
        if i < 4:
            assert r.is_(250, "2.1.5"), (i, r)
            accepted += 1
        else:
            assert r.is_(452, "4.5.3"), (i, r)
    c.expect("DATA", 354)
    r = c.send_data(h.simple_body(h.unique("rc")))
    assert r.is_(250, "2.0.0"), r
    # the window is spent for that sender domain, from any client
    c2 = connect(limited, "127.0.0.7")
    c2.ehlo()
    c2.expect("MAIL FROM:<other@counted.example>", 250, "2.1.0")
    r = c2.cmd("RCPT TO:<z@example.test>")
    assert r.is_(452, "4.5.3"), r
    # other sender domains are not
    c2.expect("RSET", 250)
    c2.expect("MAIL FROM:<s@elsewhere.example>", 250, "2.1.0")
    c2.expect("RCPT TO:<z@example.test>", 250, "2.1.5")
    c2.close()
    c.close()


def test_sender_domain_pattern_counts_each_domain(limited):
    # ".sub.example": the rule covers sub.example and its subdomains, and
    # counts each sender domain on its own
    c = connect(limited, "127.0.0.8")
    c.ehlo()
    for i in range(2):
        assert send_one(c, "a%d@x.sub.example" % i, ["p%d@example.test" % i],
                        h.unique("sd")).is_(250)
    r = c.cmd("MAIL FROM:<b@x.sub.example>")
    assert r.is_(450, "4.7.1"), r
    for sender in ("c@sub.example", "d@y.sub.example", "e@notsub.example"):
        assert send_one(c, sender, ["q@example.test"],
                        h.unique("sd")).is_(250), sender
    c.close()


def test_null_sender_is_never_limited(limited):
    c = connect(limited, "127.0.0.9")
    c.ehlo()
    for i in range(6):
        c.expect("MAIL FROM:<>", 250, "2.1.0")
        c.expect("RSET", 250)
    c.close()


def test_auth_user_limit(limited):
    for i in range(3):
        c = h.SMTPConn(limited.port("sub"))
        c.ehlo()
        c.starttls()
        c.ehlo()
        c.expect("AUTH PLAIN " + h.auth_plain_token(
            "alice@example.test", "alice-secret"), 235)
        r = c.cmd("MAIL FROM:<alice@example.test>")
        if i < 2:
            assert r.is_(250, "2.1.0"), (i, r)
        else:
            assert r.is_(450, "4.7.1"), (i, r)
        c.close()
    # bob has no rule
    c = h.SMTPConn(limited.port("sub"))
    c.ehlo()
    c.starttls()
    c.ehlo()
    c.expect("AUTH PLAIN " + h.auth_plain_token(
        "bob@example.test", "b0b pass w0rd"), 235)
    for _ in range(3):
        c.expect("MAIL FROM:<bob@example.test>", 250, "2.1.0")
        c.expect("RSET", 250)
    c.close()


# --------------------------------------------------------------------------
# the fleet policy sets and changes limits without a reload


@pytest.fixture(scope="module")
def fleet_node(tmp_path_factory, certs):
    import controlharness as ch
    ctld, control = ch.controld_for(tmp_path_factory.mktemp("limits-fleet"),
                                    "limiter")
    extra = LIMITS + control
    ng = h.launch(tmp_path_factory, certs, "limits-node", workers=2,
                  stream_extra=extra)
    try:
        yield ng, ctld, ch
    finally:
        ng.stop()
        ctld.stop()
        ng.assert_log_clean()


def apply_limit(ctld, ch, ng, text_limits):
    p = ch.pb.Policy(comment="limits")
    for key, match, window, messages in text_limits:
        p.inbound_limits.add(key=key, match=match, window_s=window,
                             messages=messages)
    chan, admin = ctld.admin()
    with chan:
        v = admin.Apply(ch.pb.ApplyRequest(policy=p)).version
    h.wait_until(lambda: "relay policy version %d in use" % v
                 in ng.error_log(), timeout=10, what="policy in use")
    # both workers
    h.wait_until(lambda: ng.error_log().count(
        "relay policy version %d in use" % v) >= 2, timeout=10,
        what="both workers on the new policy")
    return v


def test_fleet_limit_applies_and_changes_without_reload(fleet_node):
    ng, ctld, ch = fleet_node
    key = ch.pb.InboundLimit.CLIENT_IP

    # nginx.conf has no rule for 127.0.0.10: unlimited
    c = connect(ng, "127.0.0.10")
    c.ehlo()
    for _ in range(3):
        c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
        c.expect("RSET", 250)

    apply_limit(ctld, ch, ng, [(key, "127.0.0.10", 3600, 2)])
    masters = ng.master_pid
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    c.expect("RSET", 250)
    c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
    c.expect("RSET", 250)
    r = c.cmd("MAIL FROM:<a@example.org>")
    assert r.is_(450, "4.7.1"), r

    # raised by the fleet: the same counter, a higher limit
    apply_limit(ctld, ch, ng, [(key, "127.0.0.10", 3600, 4)])
    for _ in range(2):
        c.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
        c.expect("RSET", 250)
    r = c.cmd("MAIL FROM:<a@example.org>")
    assert r.is_(450, "4.7.1"), r

    # the fleet overrides nginx.conf's rule of the same key and match
    c3 = connect(ng, "127.0.0.3")
    c3.ehlo()
    apply_limit(ctld, ch, ng, [(key, "127.0.0.3", 3600, 10)])
    for _ in range(5):
        c3.expect("MAIL FROM:<a@example.org>", 250, "2.1.0")
        c3.expect("RSET", 250)
    c3.close()
    c.close()

    assert ng.master_pid == masters          # no reload happened
    assert "reconfiguring" not in ng.error_log()
