"""
Harness for the controld tests: dev certificates, Python stubs generated
from proto/ at test time, a controld process on a free port in 24500-24999,
mTLS channels per identity, and FakeNode, a relay node speaking
Node.Session in a thread (auto ACK or NACK, scripted command results).

The binary is $CONTROLD (default: BUILD_DIR/controld/controld of
$RELAY_MODULE's build, else build/controld/controld), relayctl is $RELAYCTL
(default: next to controld); a missing binary is a failure, never a skip.
Run holds what a relayctl run gave.
"""

import importlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc

TOP = Path(__file__).resolve().parents[2]
PROTO = TOP / "proto"
# $CONTROLD, else next to $RELAY_MODULE's build (tests/run-all.sh BUILD_DIR
# sets that), else build/controld/controld
CONTROLD = os.environ.get("CONTROLD") or (
    str(Path(os.environ["RELAY_MODULE"]).parents[1] / "controld" / "controld")
    if os.environ.get("RELAY_MODULE")
    else str(TOP / "build" / "controld" / "controld"))
# $RELAYCTL, else next to controld
RELAYCTL = os.environ.get("RELAYCTL") or str(Path(CONTROLD).parent
                                             / "relayctl")
PORTS = range(24500, 25000)

pb = None
pb_grpc = None


def load_stubs(gen_dir):
    """protoc --python_out --grpc_python_out into gen_dir, then import."""
    global pb, pb_grpc
    if pb is not None:
        return
    gen_dir = Path(gen_dir)
    gen_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["protoc", f"--proto_path={PROTO}", f"--python_out={gen_dir}",
         f"--grpc_python_out={gen_dir}",
         "--plugin=protoc-gen-grpc_python=/usr/bin/grpc_python_plugin",
         "relay/control/v1/control.proto"], check=True)
    sys.path.insert(0, str(gen_dir))
    pb = importlib.import_module("relay.control.v1.control_pb2")
    pb_grpc = importlib.import_module("relay.control.v1.control_pb2_grpc")


def make_certs(d, *nodes):
    script = TOP / "deploy" / "dev-certs.sh"
    subprocess.run(["sh", str(script), str(d), *nodes], check=True,
                   stdout=subprocess.DEVNULL)
    return Path(d)


def free_port(start=None):
    ports = list(PORTS)
    off = (os.getpid() * 7) % len(ports)
    for p in ports[off:] + ports[:off]:
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
        except OSError:
            continue
        finally:
            s.close()
        return p
    raise RuntimeError("no free port in 24500-24999")


def controld_for(work, node):
    """A started controld (stubs and certificates in work) and the
    stream{} lines that subscribe a relay node to it over mTLS."""
    load_stubs(work / "gen")
    pki = make_certs(work / "pki", node)
    ctld = Controld(work / "ctld", pki).start()
    lines = """
    relay_control 127.0.0.1:%d node=%s;
    relay_control_certificate %s/node-%s.pem;
    relay_control_certificate_key %s/node-%s.key;
    relay_control_trusted_certificate %s/ca.pem;
""" % (ctld.port, node, pki, node, pki, node, pki)
    return ctld, lines


def wait_for(cond, timeout=10.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Controld:
    def __init__(self, workdir, certs, port=None, insecure=False, extra=()):
        if not os.access(CONTROLD, os.X_OK):
            raise AssertionError(f"controld binary not found: {CONTROLD} "
                                 "(set CONTROLD)")
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.certs = Path(certs)
        self.port = port or free_port()
        self.insecure = insecure
        self.extra = list(extra)
        self.proc = None
        self.log_path = self.dir / "controld.log"

    def start(self):
        args = [CONTROLD, "--listen", f"127.0.0.1:{self.port}",
                "--data-dir", str(self.dir / "data")]
        if self.insecure:
            args.append("--insecure")
        else:
            args += ["--ca", str(self.certs / "ca.pem"),
                     "--cert", str(self.certs / "controld.pem"),
                     "--key", str(self.certs / "controld.key")]
        args += self.extra
        self.log = open(self.log_path, "ab")
        off = self.log.tell()
        self.proc = subprocess.Popen(args, cwd=self.dir, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        wait_for(lambda: b"listening on" in self.log_path.read_bytes()[off:]
                 or self.proc.poll() is not None, 10, "controld to listen")
        if self.proc.poll() is not None:
            raise AssertionError("controld exited: " + self.log_text())
        return self

    def stop(self, sig=signal.SIGTERM):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode
        self.proc = None
        self.log.close()
        return rc

    def restart(self):
        assert self.stop() == 0
        return self.start()

    def log_text(self):
        return self.log_path.read_text(errors="replace")

    def creds(self, name):
        """name: 'operator', 'node-<id>', or a (ca, cert, key) triple."""
        if isinstance(name, tuple):
            ca, cert, key = name
        else:
            ca = self.certs / "ca.pem"
            cert = self.certs / f"{name}.pem"
            key = self.certs / f"{name}.key"
        return grpc.ssl_channel_credentials(
            root_certificates=Path(ca).read_bytes(),
            private_key=Path(key).read_bytes(),
            certificate_chain=Path(cert).read_bytes())

    def channel(self, name="operator"):
        target = f"127.0.0.1:{self.port}"
        if self.insecure:
            return grpc.insecure_channel(target)
        return grpc.secure_channel(target, self.creds(name))

    def admin(self, name="operator"):
        ch = self.channel(name)
        return ch, pb_grpc.AdminStub(ch)


class Run:
    """What a relayctl run gave: rc, out, err (and out as JSON)."""

    def __init__(self, p):
        self.rc = p.returncode
        self.out = p.stdout
        self.err = p.stderr

    def json(self):
        return json.loads(self.out)

    def __repr__(self):
        return "rc=%s\nstdout:\n%s\nstderr:\n%s" % (self.rc, self.out,
                                                   self.err)


def policy(comment="test", routes=(("example.com", ["[10.0.0.1]:25"]),),
           **kw):
    p = pb.Policy(comment=comment, **kw)
    for pattern, hops in routes:
        p.routes.add(pattern=pattern, next_hops=list(hops))
    return p


class FakeNode:
    """One Node.Session stream.  ack: True (ACK), or a NACK reason string;
    on_command(cmd) returns a CommandResult or None (no answer)."""

    def __init__(self, ctld, node_id, cert=None, hello_id=None, applied=0,
                 ack=True, on_command=None, labels=None, incarnation=0):
        self.node_id = node_id
        self.ack = ack
        self.on_command = on_command
        self.policies = []
        self.commands = []
        self.error = None
        self.done = False
        self.cond = threading.Condition()
        self.out = queue.Queue()
        self.channel = ctld.channel(cert or f"node-{node_id}")
        stub = pb_grpc.NodeStub(self.channel)
        self.out.put(pb.NodeMessage(hello=pb.Hello(
            node_id=hello_id if hello_id is not None else node_id,
            applied_version=applied, software="fakenode/1",
            labels=[pb.Label(name=k, value=v)
                    for k, v in (labels or {}).items()],
            incarnation=incarnation)))
        self.call = stub.Session(iter(self.out.get, None),
                                 wait_for_ready=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        try:
            for m in self.call:
                kind = m.WhichOneof("msg")
                with self.cond:
                    if kind == "policy":
                        self.policies.append(m.policy)
                    elif kind == "command":
                        self.commands.append(m.command)
                    self.cond.notify_all()
                if kind == "policy":
                    v = m.policy.version
                    if self.ack is True:
                        self.send(ack=pb.Ack(version=v, ok=True))
                    elif self.ack:
                        self.send(ack=pb.Ack(version=v, ok=False,
                                             reason=self.ack))
                elif kind == "command" and self.on_command:
                    r = self.on_command(m.command)
                    if r is not None:
                        self.send(result=r)
        except grpc.RpcError as e:
            self.error = e
        finally:
            with self.cond:
                self.done = True
                self.cond.notify_all()

    def send(self, **kw):
        self.out.put(pb.NodeMessage(**kw))

    def wait(self, pred, timeout=10.0, what="node condition"):
        with self.cond:
            if not self.cond.wait_for(lambda: pred(self), timeout):
                raise AssertionError(f"{self.node_id}: timed out waiting "
                                     f"for {what}")

    def versions(self):
        return [p.version for p in self.policies]

    def wait_end(self, timeout=10.0):
        self.wait(lambda n: n.done, timeout, "the stream to end")
        return self.error

    def close(self):
        self.out.put(None)
        self.call.cancel()
        self.thread.join(5)
        self.channel.close()
