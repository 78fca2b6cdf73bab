#!/usr/bin/python3
"""bench/idle.py: memory of the relay holding N idle SMTP sessions.

Opens N connections to the relay (default 10000), and on each one reads the
220 greeting, sends EHLO and reads the whole 250 reply; then holds them all
idle, waits --settle seconds and sums VmRSS over every nginx process of the
instance (master + workers, from /proc).  Prints the baseline (no session),
the total with N sessions, the growth per session, and the target
(< 256 MB total).  Then it checks that the sessions are still alive (NOOP ->
250 on each) and closes them.

Client sockets are spread over source addresses 127.0.0.1..127.0.0.K so
ephemeral ports never run short, and over several client processes when N
exceeds what one process may open (RLIMIT_NOFILE, raised to its hard limit).
Everything is bounded by --timeout.

By default it starts the relay itself (bench/lib.sh) in a private
loopback-only network namespace; --relay-addr uses a running one (then
--pid gives its nginx master pid for the RSS figure).

  /usr/bin/python3 bench/idle.py [-n 10000] [--settle 2]
"""

import argparse
import errno
import os
import resource
import selectors
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # noqa: E402

TARGET_MB = 256


class Sess:
    __slots__ = ("sock", "state", "buf")

    def __init__(self, sock):
        self.sock = sock
        self.state = "connect"
        self.buf = b""


def reply_complete(buf):
    """True when buf holds a whole SMTP reply (last line 'NNN ...')."""
    if not buf.endswith(b"\r\n"):
        return False
    last = buf[:-2].rsplit(b"\r\n", 1)[-1]
    return len(last) >= 3 and last[3:4] != b"-"


def open_sessions(addr, n, sources, first, deadline, in_flight=500):
    """Open n sessions (greeting read, EHLO answered); returns (list of
    sockets, failures).  first: index of the first session (picks the source
    address)."""
    sel = selectors.DefaultSelector()
    done, failed = [], 0
    opening = 0
    i = 0
    while (i < n or opening) and time.monotonic() < deadline:
        while i < n and opening < in_flight:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            src = sources[(first + i) % len(sources)]
            i += 1
            try:
                s.bind((src, 0))
                rc = s.connect_ex(addr)
            except OSError as e:
                benchlib.log("socket %d: %s" % (first + i, e))
                s.close()
                failed += 1
                continue
            if rc not in (0, errno.EINPROGRESS):
                s.close()
                failed += 1
                continue
            st = Sess(s)
            sel.register(s, selectors.EVENT_WRITE, st)
            opening += 1
        for key, ev in sel.select(timeout=1.0):
            st = key.data
            s = st.sock
            try:
                if st.state == "connect":
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise OSError(err, os.strerror(err))
                    st.state = "greet"
                    sel.modify(s, selectors.EVENT_READ, st)
                    continue
                data = s.recv(4096)
                if not data:
                    raise OSError("closed by server in state " + st.state)
                st.buf += data
                if not reply_complete(st.buf):
                    continue
                if st.state == "greet":
                    if not st.buf.startswith(b"220"):
                        raise OSError("greeting %r" % st.buf[:80])
                    st.buf = b""
                    st.state = "ehlo"
                    s.sendall(b"EHLO idle.client.test\r\n")
                elif st.state == "ehlo":
                    if not st.buf.startswith(b"250"):
                        raise OSError("EHLO reply %r" % st.buf[:80])
                    sel.unregister(s)
                    opening -= 1
                    done.append(s)
            except OSError as e:
                if failed < 5:
                    benchlib.log("session failed: %s" % e)
                failed += 1
                opening -= 1
                sel.unregister(s)
                s.close()
    # whatever is still opening at the deadline counts as failed
    for key in list(sel.get_map().values()):
        failed += 1
        key.fileobj.close()
    failed += n - i
    sel.close()
    return done, failed


def noop_check(socks, deadline):
    """Send NOOP on every socket; return how many answered 250."""
    sel = selectors.DefaultSelector()
    bufs = {}
    for s in socks:
        try:
            s.sendall(b"NOOP\r\n")
            sel.register(s, selectors.EVENT_READ)
            bufs[s] = b""
        except OSError:
            pass
    ok = 0
    while bufs and time.monotonic() < deadline:
        for key, ev in sel.select(timeout=1.0):
            s = key.fileobj
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data:
                sel.unregister(s)
                del bufs[s]
                continue
            bufs[s] += data
            if reply_complete(bufs[s]):
                if bufs[s].startswith(b"250"):
                    ok += 1
                sel.unregister(s)
                del bufs[s]
    sel.close()
    return ok


def child(addr, n, sources, first, deadline, wfd, rfd):
    """A client process: open n sessions, report, wait for orders."""
    socks, failed = open_sessions(addr, n, sources, first, deadline)
    w = os.fdopen(wfd, "w", buffering=1)
    r = os.fdopen(rfd, "r")
    w.write("ready %d %d\n" % (len(socks), failed))
    for line in r:
        cmd = line.strip()
        if cmd == "noop":
            w.write("noop %d\n" % noop_check(socks, deadline))
        elif cmd == "close":
            break
    for s in socks:
        try:
            s.sendall(b"QUIT\r\n")
        except OSError:
            pass
        s.close()
    w.write("closed\n")
    os._exit(0)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--sessions", type=int, default=10000)
    ap.add_argument("--settle", type=float, default=2.0,
                    help="seconds to wait before reading RSS (default 2)")
    ap.add_argument("--sources", type=int, default=0,
                    help="source addresses 127.0.0.1..K (default: one per "
                         "20000 sessions)")
    ap.add_argument("--per-proc", type=int, default=0,
                    help="sessions per client process (default: what "
                         "RLIMIT_NOFILE allows)")
    ap.add_argument("--relay-addr", help="use a running relay HOST:PORT")
    ap.add_argument("--pid", type=int, help="its nginx master pid")
    ap.add_argument("--relay-port", type=int, default=2525)
    ap.add_argument("--timeout", type=float, default=240,
                    help="overall bound in seconds (default 240; the relay "
                         "closes idle sessions after relay_timeout 300s)")
    ap.add_argument("--keep", action="store_true", help="keep the work dir")
    args = ap.parse_args()

    if not args.relay_addr:
        benchlib.netns_reexec()

    deadline = time.monotonic() + args.timeout
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    except (ValueError, OSError):
        pass
    per_proc = args.per_proc or max(100, soft - 200)
    nsrc = args.sources or max(1, -(-args.sessions // 20000))
    sources = ["127.0.0.%d" % (k + 1) for k in range(nsrc)]
    nprocs = -(-args.sessions // per_proc)

    print("idle.py: %d idle sessions (220 read, EHLO answered), %d client "
          "process(es), source addresses %s..%s, RLIMIT_NOFILE %d"
          % (args.sessions, nprocs, sources[0], sources[-1], soft))
    sys.stdout.flush()

    srv = benchlib.Servers(keep=args.keep)
    crashed = False
    kids = []
    try:
        if args.relay_addr:
            addr = benchlib.parse_addr(args.relay_addr)
            master = args.pid
        else:
            srv.start_relay(args.relay_port)
            addr = ("127.0.0.1", args.relay_port)
            master = srv.relay_master_pid()

        # warm the workers with one full session before the baseline
        c = benchlib.SmtpClient(addr)
        c.expect(220)
        c.cmd(b"EHLO idle.client.test", 250)
        c.cmd(b"QUIT", 221)
        c.close()
        time.sleep(0.5)
        base = benchlib.nginx_rss_kb(master) if master else None
        if base:
            print("baseline (0 sessions): RSS %.1f MB over %d nginx processes"
                  % (base[0] / 1024.0, len(base[2])))

        t0 = time.monotonic()
        left, first = args.sessions, 0
        while left > 0:
            n = min(per_proc, left)
            r1, w1 = os.pipe()
            r2, w2 = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r1)
                os.close(w2)
                try:
                    child(addr, n, sources, first, deadline, w1, r2)
                finally:
                    os._exit(1)
            os.close(w1)
            os.close(r2)
            kids.append((pid, os.fdopen(r1, "r"), os.fdopen(w2, "w", buffering=1)))
            left -= n
            first += n
        opened = failed = 0
        for pid, r, w in kids:
            line = r.readline().split()
            if not line or line[0] != "ready":
                raise RuntimeError("client process %d died" % pid)
            opened += int(line[1])
            failed += int(line[2])
        t1 = time.monotonic()
        print("opened %d sessions in %.1f s (%d failed)"
              % (opened, t1 - t0, failed))
        sys.stdout.flush()

        time.sleep(args.settle)
        if master:
            rss, pss, pids = benchlib.nginx_rss_kb(master)
            per = (rss - base[0]) / max(1, opened)
            mb = rss / 1024.0
            print("with %d sessions: RSS %.1f MB total over %d nginx "
                  "processes (%s)%s; +%.2f kB per session"
                  % (opened, mb, len(pids), " ".join(map(str, pids)),
                     ", Pss %.1f MB" % (pss / 1024.0) if pss else "",
                     per))
            for p in pids:
                try:
                    with open("/proc/%d/status" % p) as f:
                        v = [l.split()[1] for l in f if l.startswith("VmRSS:")]
                    with open("/proc/%d/cmdline" % p) as f:
                        name = f.read().replace("\0", " ").strip()
                    print("    pid %d %-32s RSS %7.1f MB"
                          % (p, name, int(v[0]) / 1024.0))
                except (OSError, IndexError):
                    pass
            ok = mb < TARGET_MB and failed == 0
            print("idle RSS %.1f MB for %d sessions   target < %d MB: %s%s"
                  % (mb, opened, TARGET_MB, "PASS" if ok else "FAIL",
                     "" if failed == 0 else " (%d sessions failed)" % failed))
        sys.stdout.flush()

        alive = 0
        for pid, r, w in kids:
            w.write("noop\n")
        for pid, r, w in kids:
            line = r.readline().split()
            alive += int(line[1]) if line and line[0] == "noop" else 0
        print("still alive after the measurement (NOOP -> 250): %d of %d"
              % (alive, opened))
    except BaseException:
        crashed = True
        raise
    finally:
        for pid, r, w in kids:
            try:
                w.write("close\n")
                w.flush()
            except OSError:
                pass
        for pid, r, w in kids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        srv.stop(crashed)


if __name__ == "__main__":
    main()
