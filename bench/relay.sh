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
#   sink CPU per message: the sink's work per message is fixed, so this is
#               the shared host's speed during the run
# then, over the rounds, each server's median and spread (fastest round /
# slowest round) and the ratios of the medians relay/Postfix; for the
# relay also the spread of end-to-end x sink CPU per message, the rounds
# with the host's changes of speed taken out (a relay run of 5000 4 KB
# messages lasts under 2 s, so one burst of steal time moves it).  With -D
# both, each relay run is made twice, without and with DKIM signing of
# every message (relay_dkim client.test, an RSA key made here), and the
# summary says what signing costs: 1 - signed/unsigned end-to-end
# throughput (target at 4 KB: < 25 %).
#
# Usage: bench/relay.sh [-s SESSIONS] [-m COUNT] [-l SIZES] [-r ROUNDS]
#                       [-R on|off|both] [-D on|off|both] [-P on|off]
#   -s  parallel smtp-source sessions   (env CONC, default 20)
#   -m  messages per run                (env COUNT, default 5000)
#   -l  message sizes, comma-separated  (env SIZES, default 4096,102400)
#   -r  rounds per size                 (env ROUNDS, default 1)
#   -R  relay_connection_reuse runs     (env REUSE_RUNS, default both)
#   -D  DKIM signing runs               (env DKIM_RUNS, default off)
#   -P  Postfix runs                    (env PF_RUNS, default on)
# Env: RUN_TIMEOUT (s per run, default 300), RELAY_PORT (2525), PF_PORT
# (2526), SINK_PORT (2600), DKIM_BITS (2048), DKIM_ALG (rsa, or ed25519),
# KEEP=1 keeps the work dir, BENCH_FS (lib.sh), RELAY_BENCH_EXTRA (more
# stream{} lines for the relay, e.g. "relay_spool_journal_size 64m;").
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
DKIM_RUNS=${DKIM_RUNS:-off}
PF_RUNS=${PF_RUNS:-on}
while getopts 's:m:l:r:R:D:P:h' opt; do
    case $opt in
    s) CONC=$OPTARG ;;
    m) COUNT=$OPTARG ;;
    l) SIZES=$OPTARG ;;
    r) ROUNDS=$OPTARG ;;
    R) REUSE_RUNS=$OPTARG ;;
    D) DKIM_RUNS=$OPTARG ;;
    P) PF_RUNS=$OPTARG ;;
    *) sed -n '3,/^$/s/^# \{0,1\}//p' "$0"; exit 2 ;;
    esac
done
export CONC COUNT SIZES ROUNDS REUSE_RUNS DKIM_RUNS PF_RUNS

bench_netns_reexec "$0" "$@"

RUN_TIMEOUT=${RUN_TIMEOUT:-300}
RELAY_PORT=${RELAY_PORT:-2525}
PF_PORT=${PF_PORT:-2526}
SINK_PORT=${SINK_PORT:-2600}
KEEP=${KEEP:-0}
DKIM_BITS=${DKIM_BITS:-2048}
DKIM_ALG=${DKIM_ALG:-rsa}

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

case $DKIM_RUNS in
both) dkims=(off on) ;;
on|off) dkims=("$DKIM_RUNS") ;;
*) bench_die "-D on|off|both" ;;
esac

dkim_alg=
if [ "$DKIM_RUNS" != off ] && [ "$DKIM_ALG" = ed25519 ]; then
    openssl genpkey -algorithm ED25519 -out "$work/dkim.pem" 2>/dev/null
    dkim_alg=" algorithm=ed25519-sha256"
elif [ "$DKIM_RUNS" != off ]; then
    openssl genpkey -algorithm RSA -pkeyopt "rsa_keygen_bits:$DKIM_BITS" \
        -out "$work/dkim.pem" 2>/dev/null
fi
[ "$DKIM_RUNS" = off ] || chmod 600 "$work/dkim.pem"

summary=()
IFS=, read -r -a sizes <<< "$SIZES"
for size in "${sizes[@]}"; do
    echo "size $size bytes:"
    declare -A E C H
    for ((round = 1; round <= ROUNDS; round++)); do
        [ "$ROUNDS" -gt 1 ] && echo " round $round/$ROUNDS"
        for reuse in "${reuses[@]}"; do
            for dkim in "${dkims[@]}"; do
                RELAY_STREAM_EXTRA="    relay_delivery on;
    relay_resolver 127.0.0.1:1;
    relay_route remote.test [127.0.0.1]:$SINK_PORT;
    relay_connection_reuse $reuse;
${RELAY_BENCH_EXTRA:-}"
                if [ "$dkim" = on ]; then
                    RELAY_STREAM_EXTRA+="
    relay_dkim client.test selector=bench key=$work/dkim.pem fallback=envelope$dkim_alg;"
                fi
                export RELAY_STREAM_EXTRA
                k=r$reuse${dkim/off/}
                label=relay-reuse-$reuse
                [ "$dkim" = on ] && label+=-dkim
                relay_clean "$root/relay" "$RELAY_PORT" 2>/dev/null
                bench_e2e_run "$label" "$RELAY_PORT" relay_in_queue "$root/relay" "$size"
                E[$k]+=" $e2e" C[$k]+=" $cpu_us"
                # the sink's work per message is fixed: its CPU per message
                # is the shared host's speed in this round
                H[$k]+=" $(awk -v e="$e2e" -v k="$sink_us" 'BEGIN {printf "%.0f", e * k}')"
                if grep -E '\[(alert|crit|emerg)\]' "$root/relay/logs/error.log" >/dev/null; then
                    bench_log "relay error.log has alerts:"
                    grep -E '\[(alert|crit|emerg)\]' "$root/relay/logs/error.log" | head -5 >&2
                fi
                relay_stop "$root/relay"
            done
        done
        if [ "$PF_RUNS" = on ]; then
            pf_clean "$root/postfix" "$PF_PORT" sink "$SINK_PORT" 2>/dev/null
            bench_e2e_run postfix "$PF_PORT" pf_queued "$root/postfix" "$size"
            E[pf]+=" $e2e" C[pf]+=" $cpu_us"
            pf_stop "$root/postfix"
        fi
    done
    pe=0
    if [ "$PF_RUNS" = on ]; then
        # shellcheck disable=SC2086
        pe=$(median ${E[pf]})
        # shellcheck disable=SC2086
        summary+=("$(printf '%7d B, postfix    : end-to-end median %.1f msgs/s, spread %s (rounds:%s)' \
            "$size" "$pe" "$(spread ${E[pf]})" "${E[pf]}")")
    fi
    for reuse in "${reuses[@]}"; do
        for dkim in "${dkims[@]}"; do
            k=r$reuse${dkim/off/}
            # shellcheck disable=SC2086
            e=$(median ${E[$k]})
            # shellcheck disable=SC2086
            c=$(median ${C[$k]})
            # shellcheck disable=SC2086
            sp=$(spread ${E[$k]})
            # shellcheck disable=SC2086
            hsp=$(spread ${H[$k]})
            label=$reuse
            [ "$dkim" = on ] && label+=", dkim"
            summary+=("$(awk -v s="$size" -v r="$label" -v e="$e" -v pe="$pe" \
                -v c="$c" -v sp="$sp" -v hsp="$hsp" -v rounds="${E[$k]}" 'BEGIN {
                printf "%7d B, reuse %-3s: end-to-end median %.1f msgs/s, spread %s (rounds:%s; spread %s with the host speed taken out); ",
                    s, r, e, sp, rounds, hsp
                if (pe) printf "relay/postfix %.2f (target >= 3: %s); ", e / pe, (e / pe >= 3) ? "PASS" : "FAIL"
                printf "relay %.0f msgs/s per core (%.0f us)%s", c ? 1e6 / c : 0, c,
                    (sp > 1.3) ? "; spread > 1.3" : "" }')")
        done
        if [ "$DKIM_RUNS" = both ]; then
            # shellcheck disable=SC2086
            summary+=("$(awk -v s="$size" -v r="$reuse" -v off="$(median ${E[r$reuse]})" \
                -v on="$(median ${E[r${reuse}on]})" 'BEGIN {
                cost = 100 * (1 - on / off)
                printf "%7d B, reuse %-3s: DKIM signing costs %.1f %% of end-to-end throughput%s",
                    s, r, cost, (s <= 4096) ? ((cost < 25) ? " (target < 25 %: PASS)" : " (target < 25 %: FAIL)") : "" }')")
        fi
    done
    unset E C H
done

echo "----"
printf '%s\n' "${summary[@]}"
