"""
The shipped configuration together: the node that "./build.sh run" starts
(config/nginx.conf.in, as deploy/run-dev.sh renders it, on ports of ours)
with its controld, and config/policy.example applied to it by relayctl:
every statement either applies to the node or is scoped to others, so
the node ACKs it (it used to NACK the example's egress addresses).
Ports: 26000-26999 (etcdharness's allocator).
"""

import os
import re
import signal
import subprocess
import tempfile
import shutil
from pathlib import Path

import controlharness as ch
import etcdharness as eh
import relayharness as h

TOP = Path(__file__).resolve().parents[2]


def test_policy_example_applies_to_the_dev_node():
    h.require_module()
    base = Path(tempfile.mkdtemp(prefix="relay-dev-"))
    nginx = ctld = None
    try:
        prefix = h.make_prefix(base / "var", h.make_certs(base / "tls"))
        (prefix / "conf" / "users").write_text(
            "demo@example.test:%s\n" % h.crypt_hash("demo-password"))
        certs = ch.make_certs(prefix / "certs", "dev-node")

        shutil.copy(TOP / "config" / "bounce-rules.example",
                    prefix / "conf" / "bounce-rules")

        ports = {p: eh.alloc_port() for p in (2525, 2587, 2110, 7443, 9025)}
        conf = (TOP / "config" / "nginx.conf.in").read_text()
        conf = conf.replace("@MODULE@", h.RELAY_MODULE) \
                   .replace("@PREFIX@", str(prefix))
        for old, new in ports.items():
            conf = conf.replace("127.0.0.1:%d" % old, "127.0.0.1:%d" % new)
        (prefix / "nginx.conf").write_text(conf)

        ctld = ch.Controld(base / "controld", certs, port=ports[7443])
        ctld.start()

        log = open(prefix / "logs" / "stderr.log", "ab")
        nginx = subprocess.Popen(
            h.nginx_argv("-p", str(prefix) + "/", "-c", "nginx.conf",
                         "-g", "daemon off;"), stdout=log, stderr=log,
            stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        error_log = prefix / "logs" / "error.log"
        h.wait_until(lambda: error_log.exists() and re.search(
            r"relay control: session with \S+ started",
            error_log.read_text(errors="replace")), 15,
            what="the dev node's session")

        env = dict(os.environ, RELAYCTL_SERVER="127.0.0.1:%d" % ports[7443],
                   RELAYCTL_CA=str(certs / "ca.pem"),
                   RELAYCTL_CERT=str(certs / "operator.pem"),
                   RELAYCTL_KEY=str(certs / "operator.key"))
        r = ch.Run(subprocess.run(
            [ch.RELAYCTL, "apply", str(TOP / "config" / "policy.example")],
            env=env, capture_output=True, text=True, timeout=60))
        assert r.rc == 0, (r, error_log.read_text()[-3000:])
        assert "dev-node: ACK version 1" in r.out, r
        assert "1 of 1 node ACKed version 1" in r.out, r

        h.wait_until(lambda: "relay policy version 1 in use"
                     in error_log.read_text(), 10,
                     what="the workers to use version 1")
        assert "refused" not in error_log.read_text()
    finally:
        if nginx is not None:
            nginx.send_signal(signal.SIGQUIT)
            try:
                nginx.wait(15)
            except subprocess.TimeoutExpired:
                nginx.kill()
                nginx.wait(5)
        if ctld is not None:
            ctld.stop()
        shutil.rmtree(base, ignore_errors=True)
