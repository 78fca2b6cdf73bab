"""
Fixtures for the relay integration tests.

`relay` starts one nginx per test module on a fresh prefix (four SMTP
servers: main/trusted, submission/STARTTLS+AUTH, untrusted, idle/1s
timeout) and, at the module's teardown, stops it and asserts that
error.log holds no [alert] and no [emerg].

Run with Debian's interpreter:  /usr/bin/python3 -m pytest -q tests/integration
The module under test is $RELAY_MODULE (default build/objs/...so).
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import relayharness as h  # noqa: E402


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    return h.make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def relay(request, tmp_path_factory, certs):
    name = request.module.__name__.rsplit(".", 1)[-1]
    ng = h.launch(tmp_path_factory, certs, name)
    yield ng
    ng.stop()
    ng.assert_log_clean()


@pytest.fixture
def smtp(relay):
    """A connection to the main (trusted) server, greeted."""
    conns = []

    def connect(port_name="main", **kw):
        c = h.SMTPConn(relay.port(port_name), **kw)
        conns.append(c)
        return c

    yield connect
    for c in conns:
        c.close()


@pytest.fixture
def fresh(request, tmp_path_factory, certs):
    """launch(**kw) starts an nginx of the test's own (any number); each is
    stopped at the test's end and its error.log checked."""
    started = []

    def launch(**kw):
        ng = h.launch(tmp_path_factory, certs, request.node.name[:40], **kw)
        started.append(ng)
        return ng

    yield launch
    for ng in started:
        ng.stop()
        ng.assert_log_clean()
