#!/usr/bin/env bash
#
# bench/relay.sh: end-to-end relaying, our relay vs. a private Postfix.
#
# smtp-source -> server -> smtp-sink, for a remote domain (remote.test)
# routed to the sink: the relay with relay_route remote.test
# [127.0.0.1]:SINK_PORT (relay_delivery on), Postfix with relayhost =
# [127.0.0.1]:SINK_PORT (lib.sh "sink" mode, its defaults otherwise:
# durable queue, connection cache on demand, 20 per destination).  Same
# machine, same run, spools on the same fresh file system.  For each
# message size: the relay with relay_connection_reuse on, then off, then
# Postfix.  Prints per run:
#   accepted    COUNT / time smtp-source took (all "250"s)
#   end-to-end  COUNT / time until the last message left the queue (the
#               sink has them all: both servers remove a queue file only
#               after the sink's "250")
#   server CPU per message and the msgs/s one core gives at that cost
# then, over the rounds, each server's median and spread (fastest round /
# slowest round) and the ratios of the medians relay/Postfix.
#
# Usage: bench/relay.sh [-s SESSIONS] [-m COUNT] [-l SIZES] [-r ROUNDS]
#                       [-R on|off|both]
#   -s  parallel smtp-source sessions   (env CONC, default 20)
#   -m  messages per run                (env COUNT, default 5000)
#   -l  message sizes, comma-separated  (env SIZES, default 4096,102400)
#   -r  rounds per size                 (env ROUNDS, default 1)
#   -R  relay_connection_reuse runs     (env REUSE_RUNS, default both)
# Env: RUN_TIMEOUT (s per run, default 300), RELAY_PORT (2525), PF_PORT
# (2526), SINK_PORT (2600), KEEP=1 keeps the work dir, BENCH_FS (lib.sh).
# Runs in a private loopback-only network namespace (lib.sh).

set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

CONC=${CONC:-20}
COUNT=${COUNT:-5000}
SIZES=${SIZES:-4096,102400}
ROUNDS=${ROUNDS:-1}
REUSE_RUNS=${REUSE_RUNS:-both}
while getopts 's:m:l:r:R:h' opt; do
    case $opt in
    s) CONC=$OPTARG ;;
    m) COUNT=$OPTARG ;;
    l) SIZES=$OPTARG ;;
    r) ROUNDS=$OPTARG ;;
    R) REUSE_RUNS=$OPTARG ;;
    *) sed -n '3,/^$/s/^# \{0,1\}//p' "$0"; exit 2 ;;
    esac
done
export CONC COUNT SIZES ROUNDS REUSE_RUNS

bench_netns_reexec "$0" "$@"

RUN_TIMEOUT=${RUN_TIMEOUT:-300}
RELAY_PORT=${RELAY_PORT:-2525}
PF_PORT=${PF_PORT:-2526}
SINK_PORT=${SINK_PORT:-2600}
KEEP=${KEEP:-0}

work=$(mktemp -d /var/tmp/relay-e2e.XXXXXX)
chmod 755 "$work"
root=$work

cleanup() {
    local rc=$?
    [ "$rc" -ne 0 ] && bench_dump_logs "$root/relay" "$root/postfix"
    relay_stop "$root/relay" 2>/dev/null || true
    pf_stop "$root/postfix" 2>/dev/null || true
    sink_stop "$root/sink" 2>/dev/null || true
    [ "$KEEP" = 1 ] || bench_trash_empty "$root/relay" "$root/postfix" "$root"
    bench_fs_teardown "$work"
    if [ "$KEEP" != 1 ]; then rm -rf "$work"; sync; else bench_log "kept $work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

root=$(bench_fs_setup "$work")
fs_settle "$root"
sink_start "$root/sink" "$SINK_PORT"

printf 'relay.sh: %d messages a run, %d sessions, one connection per message from smtp-source, sizes %s, spools on %s; %d cores, load average %s\n' \
    "$COUNT" "$CONC" "$SIZES" \
    "$(df --output=fstype,source "$root" | tail -1 | tr -s ' ' | sed 's/^ //')" \
    "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"

case $REUSE_RUNS in
both) reuses=(on off) ;;
on|off) reuses=("$REUSE_RUNS") ;;
*) bench_die "-R on|off|both" ;;
esac

summary=()
IFS=, read -r -a sizes <<< "$SIZES"
for size in "${sizes[@]}"; do
    echo "size $size bytes:"
    declare -A E C
    for ((round = 1; round <= ROUNDS; round++)); do
        [ "$ROUNDS" -gt 1 ] && echo " round $round/$ROUNDS"
        for reuse in "${reuses[@]}"; do
            export RELAY_STREAM_EXTRA="    relay_delivery on;
    relay_resolver 127.0.0.1:1;
    relay_route remote.test [127.0.0.1]:$SINK_PORT;
    relay_connection_reuse $reuse;"
            relay_clean "$root/relay" "$RELAY_PORT" 2>/dev/null
            bench_e2e_run "relay-reuse-$reuse" "$RELAY_PORT" relay_in_queue "$root/relay" "$size"
            E[r$reuse]+=" $e2e" C[r$reuse]+=" $cpu_us"
            if grep -E '\[(alert|crit|emerg)\]' "$root/relay/logs/error.log" >/dev/null; then
                bench_log "relay error.log has alerts:"
                grep -E '\[(alert|crit|emerg)\]' "$root/relay/logs/error.log" | head -5 >&2
            fi
            relay_stop "$root/relay"
        done
        pf_clean "$root/postfix" "$PF_PORT" sink "$SINK_PORT" 2>/dev/null
        bench_e2e_run postfix "$PF_PORT" pf_queued "$root/postfix" "$size"
        E[pf]+=" $e2e" C[pf]+=" $cpu_us"
        pf_stop "$root/postfix"
    done
    # shellcheck disable=SC2086
    pe=$(median ${E[pf]})
    # shellcheck disable=SC2086
    summary+=("$(printf '%7d B, postfix    : end-to-end median %.1f msgs/s, spread %s (rounds:%s)' \
        "$size" "$pe" "$(spread ${E[pf]})" "${E[pf]}")")
    for reuse in "${reuses[@]}"; do
        # shellcheck disable=SC2086
        e=$(median ${E[r$reuse]})
        # shellcheck disable=SC2086
        c=$(median ${C[r$reuse]})
        # shellcheck disable=SC2086
        sp=$(spread ${E[r$reuse]})
        summary+=("$(awk -v s="$size" -v r="$reuse" -v e="$e" -v pe="$pe" \
            -v c="$c" -v sp="$sp" -v rounds="${E[r$reuse]}" 'BEGIN {
            printf "%7d B, reuse %-3s: end-to-end median %.1f msgs/s, spread %s (rounds:%s); relay/postfix %.2f (target >= 3: %s); relay %.0f msgs/s per core%s",
                s, r, e, sp, rounds, e / pe, (e / pe >= 3) ? "PASS" : "FAIL", c ? 1e6 / c : 0,
                (sp > 1.3) ? "; spread > 1.3" : "" }')")
    done
    unset E C
done

echo "----"
printf '%s\n' "${summary[@]}"
