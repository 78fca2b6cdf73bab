#!/usr/bin/python3
"""bench/latency.py: end-of-data latency at concurrency 1, relay vs Postfix.

One client, one message at a time, over --conns connections used one after
the other (default 1).  For each message: MAIL, RCPT, DATA, the content, then
the clock starts right before the final "\\r\\n.\\r\\n" is written and stops
when the whole "250" reply has been read.  That is the time the server needs
to make the message durable and answer.  The first --warmup messages of each
server are sent but not counted.

By default both servers relay every message on to an smtp-sink as it
arrives, as in production (the relay with relay_route, Postfix with
relayhost): the latency includes what delivery does to the disk meanwhile.
--no-deliver keeps the mail queued instead (Postfix's hold queue).

Per server, prints a disk floor (the same syncs by hand on the same file
system, taken in --probe-blocks blocks between the server's messages, so in
the same minutes: the disk of a shared machine changes from one minute to
the next), then p50/p90/p99/p99.9/max (ms) and, for the relay, the target:
p99 at most 1.5 times the floor's p99 of the same run.  By default it starts
both servers itself (bench/lib.sh) inside a private loopback-only network
namespace, in a work dir under /var/tmp that it removes at the end;
--relay-addr / --postfix-addr measure running servers instead.

  /usr/bin/python3 bench/latency.py [-n 2000] [--conns 1] [--size 4096]
"""

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402


def run(addr, count, conns, size, warmup, deadline, between=None, every=0):
    """Send warmup + count messages; return (eod latencies, whole
    transaction latencies) in seconds, for the counted messages.  With
    "between", it is called after every "every" counted messages (outside
    any message's clock), to take the disk floor in the same minutes."""
    total = warmup + count
    per_conn = -(-total // conns)
    eod, txn = [], []
    sent = 0
    body = benchlib.make_body(size)
    assert body.endswith(b"\r\n")
    head, tail = body[:-2], b"\r\n.\r\n"
    clock = time.perf_counter
    while sent < total:
        c = benchlib.SmtpClient(addr)
        try:
            c.expect(220)
            c.cmd(b"EHLO latency.client.test", 250)
            for _ in range(min(per_conn, total - sent)):
                if time.monotonic() > deadline:
                    raise TimeoutError("deadline passed after %d messages" % sent)
                t0 = clock()
                c.cmd(b"MAIL FROM:<sender@client.test>", 250)
                c.cmd(b"RCPT TO:<rcpt@remote.test>", 250)
                c.cmd(b"DATA", 354)
                c.sock.sendall(head)
                t1 = clock()
                c.sock.sendall(tail)
                c.expect(250)
                t2 = clock()
                if sent >= warmup:
                    eod.append(t2 - t1)
                    txn.append(t2 - t0)
                    if between and every and len(eod) % every == 0:
                        between()
                sent += 1
            c.cmd(b"QUIT", 221)
        finally:
            c.close()
    return eod, txn


class DiskProbe:
    """The durable-write floor on the spools' filesystem, per message: the
    relay's path (a new queue file written but not synced, the same octets
    overwriting the next record of a journal whose blocks were written
    beforehand, fdatasync of the journal) and Postfix's (a new file
    written, fsync).  Taken in blocks, so that a block can run between the
    server's messages: the disk of a shared machine changes from minute to
    minute, and the floor must be the one of the same minutes."""

    def __init__(self, work, size, n):
        self.dir = os.path.join(work, "probe")
        os.makedirs(os.path.join(self.dir, "q"), exist_ok=True)
        self.data = b"x" * (size + 600)
        self.record = -(-(len(self.data) + 64) // 8) * 8
        self.n = n
        self.relay_like, self.pf_like = [], []

    def block(self, n):
        d = self.dir
        jsize = self.record * n + 4096
        jfd = os.open(os.path.join(d, "journal"),
                      os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(jfd, bytes(jsize))
        os.fsync(jfd)
        clock = time.perf_counter
        try:
            for i in range(n):
                t0 = clock()
                fd = os.open(os.path.join(d, "q", str(i)),
                             os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
                os.write(fd, self.data)
                os.pwrite(jfd, self.data, 512 + i * self.record)
                os.fdatasync(jfd)
                os.close(fd)
                t1 = clock()
                fd = os.open(os.path.join(d, "q", "p%d" % i),
                             os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
                os.write(fd, self.data)
                os.fsync(fd)
                os.close(fd)
                t2 = clock()
                self.relay_like.append(t1 - t0)
                self.pf_like.append(t2 - t1)
        finally:
            os.close(jfd)
            os.unlink(os.path.join(d, "journal"))
            for f in os.listdir(os.path.join(d, "q")):
                os.unlink(os.path.join(d, "q", f))

    def report(self, fs_name, when):
        rl, pl = sorted(self.relay_like), sorted(self.pf_like)
        p = lambda v, q: 1000.0 * benchlib.percentile(v, q)  # noqa: E731
        print("disk floor (%s, n=%d, %s): journal overwrite+fdatasync "
              "p50 %.3f p99 %.3f ms; new file write+fsync p50 %.3f "
              "p99 %.3f ms"
              % (fs_name, len(rl), when, p(rl, .5), p(rl, .99),
                 p(pl, .5), p(pl, .99)))
        sys.stdout.flush()
        return p(rl, .99)


def report(name, eod, txn, target_ms=None, target_what=""):
    eod = sorted(eod)
    txn = sorted(txn)
    ms = lambda v: v * 1000.0  # noqa: E731
    p = lambda v, q: ms(benchlib.percentile(v, q))  # noqa: E731
    line = ("%-8s n=%d  end-of-data->250 ms: p50 %.3f  p90 %.3f  p99 %.3f"
            "  p99.9 %.3f  max %.3f  mean %.3f"
            % (name, len(eod), p(eod, .5), p(eod, .9), p(eod, .99),
               p(eod, .999), ms(eod[-1]), ms(sum(eod) / len(eod))))
    if target_ms is not None:
        ok = p(eod, .99) <= target_ms
        line += "   target p99 <= %.3f ms%s: %s" % (target_ms, target_what,
                                                   "PASS" if ok else "FAIL")
    print(line)
    print("%-8s        whole MAIL..250 ms:   p50 %.3f  p90 %.3f  p99 %.3f"
          "  max %.3f  (%.0f msgs/s at concurrency 1)"
          % ("", p(txn, .5), p(txn, .9), p(txn, .99), ms(txn[-1]),
             len(txn) / sum(txn)))
    sys.stdout.flush()


def probed_run(srv, args, addr, when):
    """One server's run, the disk probe's blocks spread over it; prints
    the floor and returns (eod, txn, the floor's p99 in ms or None)."""
    blocks = max(1, min(args.probe_blocks, args.count)) if args.probe else 0
    if not blocks:
        eod, txn = run(addr, args.count, args.conns, args.size, args.warmup,
                       time.monotonic() + args.timeout)
        return eod, txn, None
    probe = DiskProbe(srv.root, args.size, args.probe)
    per_block = -(-args.probe // blocks)
    probe.block(per_block)
    eod, txn = run(addr, args.count, args.conns, args.size, args.warmup,
                   time.monotonic() + args.timeout,
                   between=lambda: (probe.block(per_block)
                                    if len(probe.relay_like) < args.probe
                                    else None),
                   every=max(1, args.count // blocks))
    return eod, txn, probe.report(srv.fs_name(), when)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--count", type=int, default=2000,
                    help="counted messages per server (default 2000)")
    ap.add_argument("--conns", type=int, default=1,
                    help="connections, used one after the other (default 1)")
    ap.add_argument("--size", type=int, default=4096,
                    help="payload bytes per message (default 4096)")
    ap.add_argument("--warmup", type=int, default=50,
                    help="uncounted messages first (default 50)")
    ap.add_argument("--targets", default="relay,postfix",
                    help="relay,postfix (default both); relay-dkim: the "
                         "relay signing every message (RSA-2048)")
    ap.add_argument("--pf-mode", default=os.environ.get("PF_MODE", "hold"),
                    choices=["hold", "defer"], help="Postfix queue mode")
    ap.add_argument("--relay-addr", help="use a running relay HOST:PORT")
    ap.add_argument("--postfix-addr", help="use a running Postfix HOST:PORT")
    ap.add_argument("--relay-port", type=int, default=2525)
    ap.add_argument("--postfix-port", type=int, default=2526)
    ap.add_argument("--timeout", type=float, default=600,
                    help="seconds allowed per server (default 600)")
    ap.add_argument("--probe", type=int, default=300,
                    help="disk probe iterations per server run, 0 to skip "
                         "(default 300)")
    ap.add_argument("--probe-blocks", type=int, default=10,
                    help="the probe runs in this many blocks spread over "
                         "each server's run (default 10; 1: before it)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    ap.add_argument("--no-deliver", dest="deliver", action="store_false",
                    help="keep the mail queued (default: relay it on to "
                         "an smtp-sink as it arrives)")
    ap.add_argument("--sink-port", type=int, default=2600)
    ap.add_argument("--dkim-alg", default="rsa", choices=["rsa", "ed25519"],
                    help="the relay-dkim target's key (default RSA-2048)")
    args = ap.parse_args()
    targets = [t for t in args.targets.split(",") if t]

    if not (args.relay_addr or args.postfix_addr):
        benchlib.netns_reexec()

    pf_mode = "sink" if args.deliver else args.pf_mode
    print("latency.py: %d messages (+%d warmup), %d bytes, concurrency 1, "
          "%d connection(s), %s, postfix mode %s"
          % (args.count, args.warmup, args.size, args.conns,
             "each message relayed on to smtp-sink" if args.deliver
             else "mail kept queued", pf_mode))
    sys.stdout.flush()
    srv = benchlib.Servers(keep=args.keep)
    crashed = False
    try:
        srv.settle()
        if args.deliver:
            srv.start_sink(args.sink_port)
            os.environ["RELAY_STREAM_EXTRA"] = os.environ.get(
                "RELAY_STREAM_EXTRA", "") + (
                "    relay_delivery on;\n"
                "    relay_resolver 127.0.0.1:1;\n"
                "    relay_route remote.test [127.0.0.1]:%d;\n"
                % args.sink_port)
        extra = os.environ.get("RELAY_STREAM_EXTRA", "")
        for t in targets:
            if t == "relay-dkim":
                key = os.path.join(srv.root, "dkim.pem")
                alg = (["-algorithm", "ED25519"] if args.dkim_alg == "ed25519"
                       else ["-algorithm", "RSA", "-pkeyopt",
                             "rsa_keygen_bits:2048"])
                subprocess.run(["openssl", "genpkey"] + alg + ["-out", key],
                               check=True, stderr=subprocess.DEVNULL)
                os.chmod(key, 0o600)
                os.environ["RELAY_STREAM_EXTRA"] = extra + (
                    "    relay_dkim client.test selector=bench key=%s%s;\n"
                    % (key, " algorithm=ed25519-sha256"
                       if args.dkim_alg == "ed25519" else ""))
                srv.start_relay(args.relay_port)
                eod, txn = run(("127.0.0.1", args.relay_port), args.count,
                               args.conns, args.size, args.warmup,
                               time.monotonic() + args.timeout)
                report("relay-dkim (%s)" % args.dkim_alg, eod, txn)
                srv.stop_relay()
                os.environ["RELAY_STREAM_EXTRA"] = extra
            elif t == "relay":
                if args.relay_addr:
                    addr = benchlib.parse_addr(args.relay_addr)
                else:
                    srv.start_relay(args.relay_port)
                    addr = ("127.0.0.1", args.relay_port)
                eod, txn, floor_p99 = probed_run(srv, args, addr,
                                                 "during the relay's run")
                report("relay", eod, txn,
                       target_ms=1.5 * floor_p99 if floor_p99 else None,
                       target_what=" (1.5 x the floor's p99)")
                srv.stop_relay()
            elif t == "postfix":
                if args.postfix_addr:
                    addr = benchlib.parse_addr(args.postfix_addr)
                else:
                    srv.start_postfix(args.postfix_port, pf_mode,
                                      args.sink_port)
                    addr = ("127.0.0.1", args.postfix_port)
                eod, txn, _ = probed_run(srv, args, addr,
                                         "during Postfix's run")
                report("postfix", eod, txn)
                srv.stop_postfix()
            else:
                ap.error("unknown target %r" % t)
    except BaseException:
        crashed = True
        raise
    finally:
        srv.stop(crashed)


if __name__ == "__main__":
    main()
