#!/usr/bin/env bash
#
# bench/accept.sh: acceptance throughput, relay vs. a private Postfix.
#
# Drives the same smtp-source load at our relay (nginx + module) and at a
# private Postfix, both on 127.0.0.1, both keeping the mail queued on disk
# (remote recipient from a trusted client: the relay spools it, Postfix puts
# it in its hold queue, or defers it with PF_MODE=defer).  Prints messages/s
# for each and the ratio relay/postfix next to the target (>= 3).
#
# Usage: bench/accept.sh [-s SESSIONS] [-m COUNT] [-l SIZE] [-d] [-r ROUNDS]
#                        [-t relay|postfix|both]
#   -s  parallel SMTP sessions            (env CONC, default 20)
#   -m  messages per measured run         (env COUNT, default 20000)
#   -l  payload bytes per message         (env SIZE, default 4096)
#   -d  reuse connections (smtp-source -d; default: one session per message)
#   -r  rounds; each round runs relay then postfix on clean spools
#                                         (env ROUNDS, default 1)
#   -t  which servers                     (env TARGETS, default both)
# Other env: BENCH_FS=loop|dir (default loop: spools on a fresh journaled
# ext4 image, see lib.sh bench_fs_setup), ALLOW_ERRORS=1 (smtp-source -A: go on after a 4xx/5xx reply,
# count only what was queued; default: stop at the first error and dump the
# server's log), PF_MODE=hold|defer (default hold), WARMUP=messages sent and
# wiped before each measured run (default 200), RUN_TIMEOUT=seconds per
# run (default 600), BENCH_DIR=work dir (default: mktemp under /var/tmp,
# removed at the end unless KEEP=1), RELAY_PORT (2525), PF_PORT (2526).
# Always runs in a private network namespace holding only loopback: the
# relay resolves and delivers remote mail itself (c-ares, SMTP client).

set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

CONC=${CONC:-20}
COUNT=${COUNT:-20000}
SIZE=${SIZE:-4096}
REUSE=${REUSE:-0}
ROUNDS=${ROUNDS:-1}
TARGETS=${TARGETS:-both}
while getopts 's:m:l:dr:t:h' opt; do
    case $opt in
    s) CONC=$OPTARG ;;
    m) COUNT=$OPTARG ;;
    l) SIZE=$OPTARG ;;
    d) REUSE=1 ;;
    r) ROUNDS=$OPTARG ;;
    t) TARGETS=$OPTARG ;;
    *) sed -n '3,/^$/s/^# \{0,1\}//p' "$0"; exit 2 ;;
    esac
done
export CONC COUNT SIZE REUSE ROUNDS TARGETS

bench_netns_reexec "$0" "$@"

PF_MODE=${PF_MODE:-hold}
WARMUP=${WARMUP:-200}
RUN_TIMEOUT=${RUN_TIMEOUT:-600}
RELAY_PORT=${RELAY_PORT:-2525}
PF_PORT=${PF_PORT:-2526}
KEEP=${KEEP:-0}
ALLOW_ERRORS=${ALLOW_ERRORS:-0}

if [ -n "${BENCH_DIR:-}" ]; then
    work=$BENCH_DIR; mkdir -p "$work"
else
    work=$(mktemp -d /var/tmp/relay-bench.XXXXXX)
fi
chmod 755 "$work"
root=$work
pf_dir=$work/postfix
relay_dir=$work/relay

cleanup() {
    local rc=$?
    [ "$rc" -ne 0 ] && bench_dump_logs "$relay_dir" "$pf_dir"
    relay_stop "$relay_dir" 2>/dev/null || true
    pf_stop "$pf_dir" 2>/dev/null || true
    [ "$KEEP" = 1 ] || bench_trash_empty "$relay_dir" "$pf_dir" "$root"
    bench_fs_teardown "$work"
    if [ "$KEEP" != 1 ] && [ -z "${BENCH_DIR:-}" ]; then
        rm -rf "$work"
        sync
    else
        bench_log "kept $work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

want() { [ "$TARGETS" = both ] || [ "$TARGETS" = "$1" ]; }

# cpu_busy_ticks: busy and total jiffies of the whole machine (/proc/stat)
cpu_ticks() { awk '/^cpu /{b=$2+$3+$4+$7+$8; t=b+$5+$6; print b, t}' /proc/stat; }

# run_source PORT COUNT: run smtp-source, bounded in time; prints the elapsed
# seconds and the CPU seconds smtp-source used
run_source() {
    local port=$1 n=$2 flags=() t0 t1
    [ "$REUSE" = 1 ] && flags+=(-d)
    [ "$ALLOW_ERRORS" = 1 ] && flags+=(-A)
    t0=$(date +%s.%N)
    timeout "$RUN_TIMEOUT" /usr/sbin/smtp-source "${flags[@]}" -s "$CONC" \
        -m "$n" -l "$SIZE" -M client.test -f sender@client.test \
        -t rcpt@remote.test "127.0.0.1:$port" >"$work/source.out" 2>&1 \
        || { cat "$work/source.out" >&2; bench_log "smtp-source failed"; return 1; }
    t1=$(date +%s.%N)
    # run_source runs in a $(...) subshell whose only children are the
    # ones above: 'times' line 2 is their user and sys CPU time.
    times > "$work/times.out"
    sed -n 2p "$work/times.out" | awk -v t0="$t0" -v t1="$t1" '{
        s = 0
        for (i = 1; i <= 2; i++) { split($i, b, /[ms]/); s += b[1] * 60 + b[2] }
        printf "%.3f %.2f\n", t1 - t0, s }'
}

# measure NAME PORT QUEUED_FN DIR: warm up, wipe, timed run; sets $rate
measure() {
    local name=$1 port=$2 queued_fn=$3 dir=$4 secs c0 c1 q busy out ccpu
    local pid s0 s1
    if [ "$WARMUP" -gt 0 ]; then
        run_source "$port" "$WARMUP" >/dev/null
    fi
    if [ "$name" = relay ]; then
        relay_clean "$dir" "$port"
        pid=$(relay_pid "$dir")
    else
        pf_clean "$dir" "$port" "$PF_MODE"
        pid=$(pf_pid "$dir")
    fi
    s0=$(tree_cpu "$pid")
    c0=$(cpu_ticks)
    out=$(run_source "$port" "$COUNT")
    c1=$(cpu_ticks)
    s1=$(tree_cpu "$pid")
    secs=${out% *} ccpu=${out#* }
    cpu_us=$(echo "$s0 $s1 $COUNT" | awk '{printf "%.0f", 1e6 * ($2 - $1) / $3}')
    busy=$(echo "$c0 $c1" | awk '{d=$4-$2; printf "%.0f", d ? 100*($3-$1)/d : 0}')
    sleep 1
    q=$("$queued_fn" "$dir")
    # with ALLOW_ERRORS=1, only the messages that reached the queue count
    rate=$(echo "$q $COUNT $secs" | awk '{n = ($1 < $2) ? $1 : $2; printf "%.1f", n / $3}')
    if [ "$q" -lt "$COUNT" ]; then
        bench_log "WARNING: $name queued only $q of $COUNT messages"
        [ "$name" = relay ] && bench_dump_logs "$dir"
    fi
    printf '%-8s %7d msgs in %8.3f s = %9.1f msgs/s  (%s files queued; fs create cost %s us)\n' \
        "$name" "$COUNT" "$secs" "$rate" "$q" "$(cat "$dir/create_cost" 2>/dev/null || echo '?')"
    # "others": busy CPU time of the machine not used by this server or
    # smtp-source (other processes on a shared machine skew the figures)
    echo "$s0 $s1 $ccpu $COUNT $busy $(nproc) $c0 $c1 $(getconf CLK_TCK)" | awk '{
        srv = $2 - $1; oth = ($9 - $7) / $11 - srv - $3
        printf "         cpu: server %.2f s (%.0f us/msg), smtp-source %.2f s (%.0f us/msg), others %.2f s; machine busy %d%% of %d cores\n",
            srv, 1e6 * srv / $4, $3, 1e6 * $3 / $4, (oth > 0 ? oth : 0), $5, $6 }'
}

root=$(bench_fs_setup "$work")
pf_dir=$root/postfix
relay_dir=$root/relay
fs_settle "$root"

printf 'accept.sh: %d messages, %d bytes, %d sessions, %s, postfix mode %s, spools on %s\n' \
    "$COUNT" "$SIZE" "$CONC" \
    "$([ "$REUSE" = 1 ] && echo 'connections reused (-d)' || echo 'one connection per message')" \
    "$PF_MODE" "$(df --output=fstype,source "$root" | tail -1 | tr -s ' ' | sed 's/^ //')"


relay_rates=() pf_rates=() relay_cpus=() pf_cpus=()
for ((round = 1; round <= ROUNDS; round++)); do
    [ "$ROUNDS" -gt 1 ] && echo "round $round/$ROUNDS"
    if want relay; then
        relay_start "$relay_dir" "$RELAY_PORT"
        measure relay "$RELAY_PORT" relay_queued "$relay_dir"
        relay_rates+=("$rate") relay_cpus+=("$cpu_us")
        if grep -E '\[(alert|crit|emerg)\]' "$relay_dir/logs/error.log" >/dev/null; then
            bench_log "relay error.log has alerts:"
            grep -E '\[(alert|crit|emerg)\]' "$relay_dir/logs/error.log" | head -5 >&2
        fi
        relay_stop "$relay_dir"
    fi
    if want postfix; then
        pf_start "$pf_dir" "$PF_PORT" "$PF_MODE"
        measure postfix "$PF_PORT" pf_queued "$pf_dir"
        pf_rates+=("$rate") pf_cpus+=("$cpu_us")
        pf_stop "$pf_dir"
    fi
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

echo "----"
if want relay; then
    relay_med=$(median "${relay_rates[@]}")
    echo "relay:   $relay_med msgs/s (median of ${#relay_rates[@]}: ${relay_rates[*]})"
fi
if want postfix; then
    pf_med=$(median "${pf_rates[@]}")
    echo "postfix: $pf_med msgs/s (median of ${#pf_rates[@]}: ${pf_rates[*]})"
fi
if [ "$TARGETS" = both ]; then
    echo "$(median "${relay_cpus[@]}") $(median "${pf_cpus[@]}")" | awk '{
        printf "server CPU per message (median): relay %d us, postfix %d us, postfix/relay %.2f\n", $1, $2, $2 / $1}'
    echo "$relay_med $pf_med" | awk '{r = $1 / $2;
        printf "ratio relay/postfix: %.2f   target >= 3: %s\n", r, (r >= 3) ? "PASS" : "FAIL"}'
fi
