"""
What an operator reads: relayctl saying why it cannot reach controld
(down, plaintext against TLS, a wrong CA, a missing or foreign client
certificate, TLS against an --insecure controld), and controld's log in one
format whoever writes the line (controld, its configuration, gRPC).
"""

import os
import re
import subprocess

import pytest

import controlharness as ch

LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z controld: \S")


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """Two dev CAs: "good" (controld's) and "other" (a stranger's)."""
    d = tmp_path_factory.mktemp("pki")
    return ch.make_certs(d / "good", "n1"), ch.make_certs(d / "other", "n1")


@pytest.fixture(scope="module")
def tls_ctld(tmp_path_factory, pki):
    c = ch.Controld(tmp_path_factory.mktemp("ctld"), pki[0]).start()
    yield c
    assert c.stop() in (0, None), c.log_text()


def relayctl(port, ca=None, cert=None, key=None, *args):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("RELAYCTL_") and k != "GRPC_VERBOSITY"}
    argv = [ch.RELAYCTL, "-s", "127.0.0.1:%d" % port, "--timeout", "5"]
    for flag, val in (("--ca", ca), ("--cert", cert), ("--key", key)):
        if val:
            argv += [flag, str(val)]
    p = subprocess.run(argv + list(args or ["history"]), env=env,
                       capture_output=True, text=True, timeout=30)
    return p


def test_controld_down():
    p = relayctl(ch.free_port())
    assert p.returncode == 4, p
    first = p.stderr.splitlines()[0]
    assert "connection refused: nothing listens there" in first, p.stderr
    assert "is controld running" in first
    assert "UNAVAILABLE" in p.stderr          # gRPC's words follow


# against a controld with mTLS: (label, CA, certificate, key, what relayctl
# says); "good" is controld's CA and its operator, "other" a stranger's
WRONG = [
    ("plaintext against TLS", None, None, None,
     "speaks TLS and relayctl spoke plaintext: give controld's CA with "
     "--ca FILE or RELAYCTL_CA"),
    ("CA without a client certificate", "good/ca.pem", None, None,
     "it wants a client certificate; give an operator certificate"),
    ("the wrong CA", "other/ca.pem", "good/operator.pem", "good/operator.key",
     "controld's certificate (CN controld, DNS:localhost, IP:127.0.0.1) "
     "does not verify with --ca"),
    ("a certificate of another CA", "good/ca.pem", "other/operator.pem",
     "other/operator.key", "does not accept the client certificate"),
    ("the key of another certificate", "good/ca.pem", "good/operator.pem",
     "other/operator.key", "not the key of --cert"),
]


@pytest.mark.parametrize("label,ca,cert,key,says", WRONG,
                         ids=[w[0] for w in WRONG])
def test_says_what_is_wrong(tls_ctld, pki, label, ca, cert, key, says):
    dirs = {"good": pki[0], "other": pki[1]}

    def path(f):
        return dirs[f.split("/")[0]] / f.split("/")[1] if f else None

    p = relayctl(tls_ctld.port, path(ca), path(cert), path(key))
    assert p.returncode == 4, p
    assert says in p.stderr.splitlines()[0], p.stderr


def test_tls_against_insecure_controld(tmp_path, pki):
    good, _ = pki
    c = ch.Controld(tmp_path, good, insecure=True).start()
    try:
        p = relayctl(c.port, good / "ca.pem", good / "operator.pem",
                     good / "operator.key")
        assert p.returncode == 4, p
        assert "does not answer TLS" in p.stderr, p.stderr
        assert relayctl(c.port).returncode == 0     # plaintext: fine
    finally:
        c.stop()


def test_working_call_says_nothing_more(tls_ctld, pki):
    good, _ = pki
    p = relayctl(tls_ctld.port, good / "ca.pem", good / "operator.pem",
                 good / "operator.key")
    assert p.returncode == 0 and p.stderr == "", p


def test_controld_log_has_one_format(tmp_path, tls_ctld, pki):
    good, _ = pki
    # gRPC's own error lines: a TLS client without a certificate
    relayctl(tls_ctld.port, good / "ca.pem")
    ch.wait_for(lambda: "grpc E: " in tls_ctld.log_text(), 10,
                "gRPC's handshake error in controld's log")
    lines = tls_ctld.log_text().splitlines()
    assert lines and all(LINE.match(l) for l in lines), lines
    assert any(re.search(r"controld: grpc E: .*\[\S+:\d+\]$", l)
               for l in lines), lines

    # configuration errors, and gRPC at info
    bad = tmp_path / "bad.conf"
    bad.write_text("frobnicate yes;\n")
    p = subprocess.run([ch.CONTROLD, "-c", str(bad)], capture_output=True,
                       text=True, timeout=10)
    assert p.returncode == 2
    assert LINE.match(p.stderr) and 'unknown key "frobnicate"' in p.stderr

    c = ch.Controld(tmp_path / "info", good, insecure=True)
    os.environ["GRPC_VERBOSITY"] = "info"
    try:
        c.start()
    finally:
        del os.environ["GRPC_VERBOSITY"]
    c.stop()
    lines = c.log_text().splitlines()
    assert any(" controld: grpc I: " in l for l in lines), lines
    assert all(LINE.match(l) for l in lines), lines
