"""
Recipient policy: local domains (any user / listed users), postmaster
(RFC 5321 4.5.1), relay rights (trusted network or nothing), routing
tricks (percent hack, bang path, source route), and remote mail from a
trusted network staying queued (no delivery engine yet: never bounced,
never lost).
"""

import pytest

import relayharness as h


def rcpt(c, addr, params=""):
    return c.cmd("RCPT TO:<%s>%s" % (addr, params))


def start(smtp, port="main"):
    c = smtp(port)
    c.ehlo()
    c.expect("MAIL FROM:<sender@example.org>", 250, "2.1.0")
    return c


@pytest.mark.parametrize("port", ["main", "untrusted"])
def test_local_domain_any_user(smtp, port):
    c = start(smtp, port)
    for a in ["anyone@example.test", "Some.Body@example.test",
              "x@EXAMPLE.TEST"]:
        r = rcpt(c, a)
        assert r.is_(250, "2.1.5"), (a, r)


@pytest.mark.parametrize("port", ["main", "untrusted"])
def test_strict_domain_unknown_user(smtp, port):
    c = start(smtp, port)
    r = rcpt(c, "nosuchuser@strict.test")
    assert r.is_(550, "5.1.1"), r
    # trusted networks do not open unknown local users either
    r = rcpt(c, "another@strict.test")
    assert r.is_(550, "5.1.1"), r


@pytest.mark.parametrize("user", ["listed", "bob", "carol"])
def test_strict_domain_listed_user(smtp, user):
    c = start(smtp, "untrusted")
    r = rcpt(c, user + "@strict.test")
    assert r.is_(250, "2.1.5"), r


@pytest.mark.parametrize("port", ["main", "untrusted"])
@pytest.mark.parametrize("addr", [
    "postmaster@strict.test",
    "postmaster@example.test",
    "Postmaster",
    "postmaster",
    "POSTMASTER@strict.test",
])
def test_postmaster_always_accepted(smtp, port, addr):
    c = start(smtp, port)
    r = rcpt(c, addr)
    assert r.is_(250, "2.1.5"), (addr, r)


@pytest.mark.parametrize("addr", [
    "someone@remote.example",
    "someone@example.test.evil.example",
    "u@sub.example.test",
])
def test_no_relay_from_untrusted(smtp, addr):
    c = start(smtp, "untrusted")
    r = rcpt(c, addr)
    assert r.is_(554, "5.7.1"), (addr, r)
    # the session goes on
    assert rcpt(c, "ok@example.test").is_(250, "2.1.5")


@pytest.mark.parametrize("port", ["main", "untrusted"])
@pytest.mark.parametrize("addr", [
    "user%evil.example@example.test",
    "user%evil.example@strict.test",
    "evil.example!user@example.test",
    "evil.example!user@strict.test",
])
def test_routing_through_local_domain_refused(smtp, port, addr):
    c = start(smtp, port)
    r = rcpt(c, addr)
    assert r.is_(550, "5.7.1"), (addr, r)


def test_source_route_to_remote_untrusted(smtp):
    c = start(smtp, "untrusted")
    r = rcpt(c, "@example.test:user@evil.example")
    assert r.is_(554, "5.7.1"), r
    r = rcpt(c, "@example.test,@strict.test:user@evil.example")
    assert r.is_(554, "5.7.1"), r


def test_source_route_to_local_is_accepted(relay, smtp):
    # the route is dropped (RFC 5321 appendix C): mail for u@example.test
    c = start(smtp, "untrusted")
    user = h.unique("route")
    assert rcpt(c, "@evil.example:%s@example.test" % user).is_(250, "2.1.5")
    c.expect("DATA", 354)
    r = c.send_data(h.simple_body(user))
    assert r.is_(250, "2.0.0") and r.queue_id, r
    h.wait_delivered(relay, "example.test", user)


def test_untrusted_inbound_delivery(relay, smtp):
    user = h.unique("inbound")
    c = smtp("untrusted")
    c.message("someone@remote.example", ["%s@example.test" % user],
              h.simple_body(user), ehlo="mx-client.example")
    h.wait_delivered(relay, "example.test", user)


def test_remote_from_trusted_stays_queued(relay, smtp):
    marker = h.unique("remote")
    c = smtp()
    qid = c.message("sender@example.test", ["%s@remote.example" % marker],
                    h.simple_body(marker), ehlo="client.test")
    path = h.wait_until(lambda: h.queue_file_for(relay, qid), 5,
                        what="queue file for %s" % qid)
    first, kv, rcpts, msg = h.parse_queue_file(path)
    assert first == "RELAY-QUEUE 1", first
    assert [r.get("address") for r in rcpts] == ["%s@remote.example" % marker]
    assert rcpts[0]["state"] == "P", rcpts
    assert msg.endswith(h.simple_body(marker))
    # a local message queued after it is delivered; the remote one stays
    h.barrier(relay)
    assert h.queue_file_for(relay, qid), "remote message %s vanished" % qid
    assert not h.files_containing(relay.maildir, marker)
    assert h.parse_queue_file(path)[2][0]["state"] == "P"


def test_mixed_local_and_remote(relay, smtp):
    user = h.unique("mixed")
    c = smtp()
    qid = c.message("sender@example.test",
                    ["%s@example.test" % user, "%s@remote.example" % user],
                    h.simple_body(user), ehlo="client.test")
    h.wait_delivered(relay, "example.test", user)

    def local_done():
        p = h.queue_file_for(relay, qid)
        if not p:
            return None
        st = {r["address"]: r["state"] for r in h.parse_queue_file(p)[2]}
        return st if st.get("%s@example.test" % user) == "D" else None

    st = h.wait_until(local_done, 5, what="local rcpt marked D in queue file")
    assert st["%s@remote.example" % user] == "P", st
    assert len(h.mailbox_files(relay, "example.test", user)) == 1
