"""
Versions: one VERSION file at the top of the tree, carried by controld and
relayctl (--version), the module (the Received: comment, its start line in
error.log) and the node's hello to controld (test_fleet checks that line).
"""

import re
import subprocess

import controlharness as ch
import relayharness as h

VERSION = (ch.TOP / "VERSION").read_text().splitlines()[0].strip()


def test_version_file_is_one_version():
    assert re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+(?:[~+][0-9A-Za-z.]+)?",
                        VERSION), VERSION


def test_tools_print_the_version():
    for tool, path in (("controld", ch.CONTROLD), ("relayctl", ch.RELAYCTL)):
        for flag in ("--version", "-V"):
            p = subprocess.run([path, flag], capture_output=True, text=True,
                               timeout=10)
            assert p.returncode == 0, p
            first = p.stdout.splitlines()[0]
            assert first == "%s (nginx-relay) %s" % (tool, VERSION), p.stdout
            assert "gRPC core" in p.stdout and p.stderr == ""
        p = subprocess.run([path, "--help"], capture_output=True, text=True,
                           timeout=10)
        assert "--version" in p.stdout


def test_module_version_in_received_and_log(relay, smtp):
    user = h.unique("ver")
    c = smtp()
    c.ehlo("client.test")
    c.expect("MAIL FROM:<s@example.org>", 250, "2.1.0")
    c.expect("RCPT TO:<%s@example.test>" % user, 250, "2.1.5")
    c.expect("DATA", 354)
    r = c.send_data(h.simple_body("version"))
    assert r.is_(250, "2.0.0"), r
    data = h.wait_delivered(relay, "example.test", user)[0].read_bytes()
    assert b"\r\n\tby relay.test (nginx-relay/%s) with ESMTP" \
        % VERSION.encode() in data, data[:400]
    assert "nginx-relay/%s, built for nginx/" % VERSION in relay.error_log()
