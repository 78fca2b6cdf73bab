#!/usr/bin/env bash
#
# bench/dkim.sh: what DKIM signing at acceptance costs end to end.
#
# smtp-source -> relay -> smtp-sink (relay_route remote.test
# [127.0.0.1]:SINK_PORT, relay_delivery on, relay_connection_reuse on), as
# bench/relay.sh, in the same run for each message size: the relay without
# signing, then with relay_dkim client.test (an RSA-2048 key made here,
# relaxed/relaxed, the sender's domain: every message is signed).  Prints
# per run:
#   accepted    COUNT / time smtp-source took (all "250"s)
#   end-to-end  COUNT / time until the last message left the queue
#   server CPU per message
# then, over the rounds, the medians and the cost of signing:
# 1 - signed/unsigned end-to-end throughput (target at 4 KB: < 25 %).
#
# Usage: bench/dkim.sh [-s SESSIONS] [-m COUNT] [-l SIZES] [-r ROUNDS]
#   -s  parallel smtp-source sessions   (env CONC, default 20)
#   -m  messages per run                (env COUNT, default 5000)
#   -l  message sizes, comma-separated  (env SIZES, default 4096,102400)
#   -r  rounds per size                 (env ROUNDS, default 3)
# Env: RUN_TIMEOUT (s per run, default 300), RELAY_PORT (2525), SINK_PORT
# (2600), KEY_BITS (2048), KEEP=1 keeps the work dir, BENCH_FS (lib.sh).
# Runs in a private loopback-only network namespace (lib.sh).

set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

CONC=${CONC:-20}
COUNT=${COUNT:-5000}
SIZES=${SIZES:-4096,102400}
ROUNDS=${ROUNDS:-3}
while getopts 's:m:l:r:h' opt; do
    case $opt in
    s) CONC=$OPTARG ;;
    m) COUNT=$OPTARG ;;
    l) SIZES=$OPTARG ;;
    r) ROUNDS=$OPTARG ;;
    *) sed -n '3,/^$/s/^# \{0,1\}//p' "$0"; exit 2 ;;
    esac
done
export CONC COUNT SIZES ROUNDS

bench_netns_reexec "$0" "$@"

RUN_TIMEOUT=${RUN_TIMEOUT:-300}
RELAY_PORT=${RELAY_PORT:-2525}
SINK_PORT=${SINK_PORT:-2600}
KEY_BITS=${KEY_BITS:-2048}
KEEP=${KEEP:-0}

work=$(mktemp -d /var/tmp/relay-dkim.XXXXXX)
chmod 755 "$work"
root=$work

cleanup() {
    local rc=$?
    [ "$rc" -ne 0 ] && bench_dump_logs "$root/relay"
    relay_stop "$root/relay" 2>/dev/null || true
    sink_stop "$root/sink" 2>/dev/null || true
    [ "$KEEP" = 1 ] || bench_trash_empty "$root/relay" "$root"
    bench_fs_teardown "$work"
    if [ "$KEEP" != 1 ]; then rm -rf "$work"; sync; else bench_log "kept $work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

relay_in_queue() { find "$1/spool/queue" -type f 2>/dev/null | wc -l; }

# run NAME SIZE: one timed run on clean spools; sets e2e cpu_us
run() {
    local name=$1 size=$2 pid t0 t1 t2 s0 s1 q acc
    pid=$(relay_pid "$root/relay")
    s0=$(tree_cpu "$pid")
    t0=$(date +%s.%N)
    timeout "$RUN_TIMEOUT" /usr/sbin/smtp-source -s "$CONC" -m "$COUNT" \
        -l "$size" -M client.test -f sender@client.test \
        -t rcpt@remote.test "127.0.0.1:$RELAY_PORT" >"$work/source.out" 2>&1 \
        || { cat "$work/source.out" >&2; bench_die "smtp-source failed"; }
    t1=$(date +%s.%N)
    while q=$(relay_in_queue "$root/relay"); [ "$q" -gt 0 ]; do
        if awk -v t0="$t0" -v now="$(date +%s.%N)" -v m="$RUN_TIMEOUT" \
               'BEGIN { exit !(now - t0 > m) }'; then
            bench_die "$name: $q messages still queued after ${RUN_TIMEOUT}s"
        fi
        sleep 0.05
    done
    t2=$(date +%s.%N)
    s1=$(tree_cpu "$pid")
    acc=$(awk -v n="$COUNT" -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", n / (b - a)}')
    e2e=$(awk -v n="$COUNT" -v a="$t0" -v b="$t2" 'BEGIN {printf "%.1f", n / (b - a)}')
    cpu_us=$(awk -v n="$COUNT" -v a="$s0" -v b="$s1" 'BEGIN {printf "%.0f", 1e6 * (b - a) / n}')
    printf '  %-12s accepted %8.1f msgs/s  end-to-end %8.1f msgs/s  server CPU %6d us/msg\n' \
        "$name" "$acc" "$e2e" "$cpu_us"
}

root=$(bench_fs_setup "$work")
fs_settle "$root"
sink_start "$root/sink" "$SINK_PORT"

openssl genpkey -algorithm RSA -pkeyopt "rsa_keygen_bits:$KEY_BITS" \
    -out "$work/dkim.pem" 2>/dev/null
chmod 600 "$work/dkim.pem"

printf 'dkim.sh: %d messages a run, %d sessions, sizes %s, RSA-%d, spools on %s; %d cores, load average %s\n' \
    "$COUNT" "$CONC" "$SIZES" "$KEY_BITS" \
    "$(df --output=fstype,source "$root" | tail -1 | tr -s ' ' | sed 's/^ //')" \
    "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

summary=()
IFS=, read -r -a sizes <<< "$SIZES"
for size in "${sizes[@]}"; do
    echo "size $size bytes:"
    declare -A E C
    for ((round = 1; round <= ROUNDS; round++)); do
        [ "$ROUNDS" -gt 1 ] && echo " round $round/$ROUNDS"
        for dkim in off on; do
            RELAY_STREAM_EXTRA="    relay_delivery on;
    relay_resolver 127.0.0.1:1;
    relay_route remote.test [127.0.0.1]:$SINK_PORT;
    relay_connection_reuse on;"
            if [ "$dkim" = on ]; then
                RELAY_STREAM_EXTRA+="
    relay_dkim client.test selector=bench key=$work/dkim.pem fallback=envelope;"
            fi
            export RELAY_STREAM_EXTRA
            relay_clean "$root/relay" "$RELAY_PORT" 2>/dev/null
            run "dkim-$dkim" "$size"
            E[$dkim]+=" $e2e" C[$dkim]+=" $cpu_us"
            if grep -E '\[(alert|crit|emerg)\]' "$root/relay/logs/error.log" >/dev/null; then
                bench_log "relay error.log has alerts:"
                grep -E '\[(alert|crit|emerg)\]' "$root/relay/logs/error.log" | head -5 >&2
            fi
            relay_stop "$root/relay"
        done
    done
    # shellcheck disable=SC2086
    off=$(median ${E[off]}) on=$(median ${E[on]})
    # shellcheck disable=SC2086
    coff=$(median ${C[off]}) con=$(median ${C[on]})
    summary+=("$(awk -v s="$size" -v off="$off" -v on="$on" -v coff="$coff" \
        -v con="$con" -v roff="${E[off]}" -v ron="${E[on]}" 'BEGIN {
        cost = 100 * (1 - on / off)
        printf "%7d B: end-to-end median unsigned %.1f msgs/s (rounds:%s), signed %.1f msgs/s (rounds:%s); signing costs %.1f %% of throughput%s; server CPU %d -> %d us/msg",
            s, off, roff, on, ron, cost,
            (s <= 4096) ? ((cost < 25) ? " (target < 25 %: PASS)" : " (target < 25 %: FAIL)") : "",
            coff, con }')")
    unset E C
done

echo "----"
printf '%s\n' "${summary[@]}"
