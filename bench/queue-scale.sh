#!/usr/bin/env bash
#
# bench/queue-scale.sh: a queue of a million deferred messages.
#
#   1. load: COUNT messages of 4 kB (smtp-source) for scale.test, whose
#      only host refuses connections: the destination is unreachable, the
#      mail stays deferred with a backoff of hours (nothing due);
#   2. idle: the nginx processes' CPU over IDLE seconds, and their RSS
#      against the empty-queue baseline measured at the start;
#   3. kill -9 of every nginx process; DUE of the messages made due on disk
#      (the queue tool, offline), the destination's host comes back
#      (smtp-sink), nginx starts again: time until the first due message is
#      delivered, and until every worker's schedule is rebuilt;
#   4. drain: every message made due (the queue tool, live), time until the
#      queue is empty: msgs/s.
#
# Usage: bench/queue-scale.sh [-m COUNT] [-i IDLE] [-s SESSIONS]
#   -m  messages (env COUNT, default 1000000)
#   -i  idle seconds measured (env IDLE, default 300)
#   -s  smtp-source sessions (env CONC, default 20)
# Env: DUE (100), RELAY_PORT (2525), SINK_PORT (2600), BENCH_FS_SIZE
# (default 24G here: a sparse image), KEEP=1 keeps the work dir.  Targets
# (issue): CPU < 1 % of a core while idle, RSS < 300 MB above the
# baseline, first due delivery < 10 s and schedule rebuilt < 60 s after
# the restart.  Runs in a private loopback-only network namespace (lib.sh).

set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

COUNT=${COUNT:-1000000}
IDLE=${IDLE:-300}
CONC=${CONC:-20}
while getopts 'm:i:s:h' opt; do
    case $opt in
    m) COUNT=$OPTARG ;;
    i) IDLE=$OPTARG ;;
    s) CONC=$OPTARG ;;
    *) sed -n '3,/^$/s/^# \{0,1\}//p' "$0"; exit 2 ;;
    esac
done
export COUNT IDLE CONC

bench_netns_reexec "$0" "$@"

DUE=${DUE:-100}
RELAY_PORT=${RELAY_PORT:-2525}
SINK_PORT=${SINK_PORT:-2600}
RELAYCTL=${RELAYCTL:-$top/build/controld/relayctl}
export BENCH_FS_SIZE=${BENCH_FS_SIZE:-24G}
# one inode per 8 kB: a 4 kB message and its envelope take two blocks
export BENCH_FS_MKFS_OPTS=${BENCH_FS_MKFS_OPTS:--i 8192}

[ -x "$RELAYCTL" ] || bench_die "no relayctl at $RELAYCTL (./build.sh)"

work=$(mktemp -d /var/tmp/relay-scale.XXXXXX)
chmod 755 "$work"
root=$work

cleanup() {
    local rc=$?
    [ "$rc" -ne 0 ] && bench_dump_logs "$root/relay"
    relay_stop "$root/relay" 2>/dev/null || true
    sink_stop "$root/sink"
    bench_fs_teardown "$work"
    [ "${KEEP:-0}" = 1 ] || rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT

root=$(bench_fs_setup "$work")
relay=$root/relay

export RELAY_WORKERS=${RELAY_WORKERS:-2} RELAY_THREADS=${RELAY_THREADS:-32}
export RELAY_NOFILE=${RELAY_NOFILE:-$(ulimit -Hn)}
export RELAY_STREAM_EXTRA="    relay_delivery on;
    relay_resolver 127.0.0.1:1;
    relay_retry_backoff 2h 4h;
    relay_queue_scan_interval 1h;
    relay_route scale.test [127.0.0.1]:$SINK_PORT;"

# the servers' processes: [nginx master, workers]
nginx_cpu() { tree_cpu "$(relay_pid "$relay")"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

queue_count() {
    /usr/bin/python3 -c 'import os, sys
print(sum(1 for e in os.scandir(sys.argv[1]) if "." not in e.name))' \
        "$relay/spool/queue"
}

relay_start "$relay" "$RELAY_PORT"
sleep 2
base_rss=$(nginx_rss_kb "$relay")
bench_log "empty queue: nginx RSS $((base_rss / 1024)) MB"

# ------------------------------------------------------------------ 1. load

bench_log "loading $COUNT messages of 4 kB for scale.test (its host refuses)"
t0=$(now)
timeout 7200 /usr/sbin/smtp-source -s "$CONC" -m "$COUNT" -l 4096 \
    -f from@example.org -t to@scale.test "127.0.0.1:$RELAY_PORT" \
    >"$work/source.out" 2>&1 || { cat "$work/source.out" >&2;
                                  bench_die "smtp-source failed"; }
load_s=$(elapsed "$t0")
bench_log "accepted $COUNT in $load_s s"

# the last attempts (suspended deferrals) settle
for ((i = 0; i < 120; i++)); do
    n=$(queue_count)
    [ "$n" -ge "$COUNT" ] && break
    sleep 1
done
sleep 10
queued=$(queue_count)
[ "$queued" -ge "$COUNT" ] || bench_die "only $queued of $COUNT queued"

# ------------------------------------------------------------------ 2. idle

bench_log "idle for $IDLE s"
c0=$(nginx_cpu)
sleep "$IDLE"
c1=$(nginx_cpu)
rss=$(nginx_rss_kb "$relay")
idle_pct=$(awk -v a="$c0" -v b="$c1" -v t="$IDLE" \
    'BEGIN { printf "%.2f", 100 * (b - a) / t }')
rss_mb=$(( (rss - base_rss) / 1024 ))

# --------------------------------------------------------------- 3. restart

bench_log "kill -9 of every nginx process"
master=$(relay_pid "$relay")
pids="$master $(pgrep -P "$master" | tr '\n' ' ')"
# shellcheck disable=SC2086
kill -9 $pids
for p in $pids; do
    while [ -d "/proc/$p" ] && \
          ! grep -q '^State:.*Z' "/proc/$p/status" 2>/dev/null; do
        sleep 0.1
    done
done
rm -f "$relay/logs/nginx.pid"

# DUE messages due now, written on disk while nginx is down
due_ids=$(/usr/bin/python3 -c 'import os, sys
names = [e.name for e in os.scandir(sys.argv[1]) if "." not in e.name]
print(" ".join(names[:int(sys.argv[2])]))' "$relay/spool/queue" "$DUE")
# shellcheck disable=SC2086
RELAYCTL_SPOOL=$relay/spool "$RELAYCTL" queue flush $due_ids >/dev/null \
    || bench_die "relayctl queue flush (offline) failed"

sink_start "$root/sink" "$SINK_PORT"
mv "$relay/logs/error.log" "$relay/logs/error.log.load"

t0=$(now)
"$NGINX" -p "$relay/" -c nginx.conf \
    || bench_die "nginx did not start again"
first_s= rebuilt_s=
for ((i = 0; i < 1800; i++)); do
    if [ -z "$first_s" ] && [ "$(queue_count)" -lt "$queued" ]; then
        first_s=$(elapsed "$t0")
    fi
    if [ -z "$rebuilt_s" ] && [ "$(grep -c "of this worker's share scheduled" \
            "$relay/logs/error.log")" -ge "$RELAY_WORKERS" ]; then
        rebuilt_s=$(elapsed "$t0")
    fi
    [ -n "$first_s" ] && [ -n "$rebuilt_s" ] && break
    sleep 0.1
done
grep "of this worker's share scheduled" "$relay/logs/error.log" >&2 || true

# ----------------------------------------------------------------- 4. drain

left=$(queue_count)
bench_log "draining $left messages into smtp-sink"
t0=$(now)
RELAYCTL_SPOOL=$relay/spool "$RELAYCTL" queue flush --all >/dev/null \
    || bench_die "relayctl queue flush --all failed"
flush_s=$(elapsed "$t0")
while :; do
    n=$(queue_count)
    [ "$n" -eq 0 ] && break
    [ "$(awk -v a="$t0" -v b="$(now)" 'BEGIN { print (b - a > 7200) }')" = 1 ] \
        && bench_die "queue not empty after 2 h: $n left"
    sleep 2
done
drain_s=$(elapsed "$t0")

# ---------------------------------------------------------------- figures

awk -v count="$COUNT" -v load="$load_s" -v idle="$IDLE" -v pct="$idle_pct" \
    -v base="$base_rss" -v rss="$rss_mb" -v first="${first_s:-none}" \
    -v rebuilt="${rebuilt_s:-none}" -v left="$left" -v flush="$flush_s" \
    -v drain="$drain_s" 'BEGIN {
    printf "queue-scale: %d messages of 4 kB, 2 workers\n", count
    printf "  load          %.0f s (%.0f msgs/s accepted)\n", load, count / load
    printf "  idle          nginx CPU %.2f %% of one core over %d s (target < 1 %%)\n", pct, idle
    printf "  memory        RSS %d MB above the empty-queue baseline of %d MB (target < 300 MB)\n", rss, base / 1024
    printf "  restart       first due delivery after %s s (target < 10 s); schedule rebuilt after %s s (target < 60 s)\n", first, rebuilt
    printf "  drain         %d messages in %.0f s: %.0f msgs/s (the flush itself %.1f s)\n", left, drain, left / drain, flush
}'
