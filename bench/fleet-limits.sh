#!/usr/bin/env bash
#
# bench/fleet-limits.sh: what limits of scope fleet (counted in Redis)
# cost the relay's acceptance, beside the same limits counted on the node
# and no limits at all.
#
# Each round runs bench/accept.sh -t relay (durable acceptance of SIZE-byte
# messages at CONC sessions, one connection per message) three times:
#   none   no limits
#   node   relay_limit client_ip * and relay_limit sender_domain * (scope
#          node: shared memory), limits high enough never to refuse
#   fleet  the same two rules with scope=fleet, in a private redis-server
#          on 127.0.0.1 (its own port and directory, no persistence)
# so that both rules are checked on every message.  smtp-source does not
# authenticate: the sender_domain rule stands for the issue's auth_user
# rule (one counter per message either way, in the same EVALSHA).  Then
# bench/latency.py --targets relay (concurrency 1) for each mode, ROUNDS
# times.  Prints
# the medians (rate, and the relay's CPU per message, which the machine's
# other load disturbs less), fleet/none against the target (>= 0.90), and
# the p50 deltas of end of data -> 250 and of the whole MAIL..250 against
# 0.3 ms.
#
# Usage: bench/fleet-limits.sh [-s SESSIONS] [-m COUNT] [-l SIZE]
#                              [-r ROUNDS] [-n LATENCY_COUNT]
#   -s  parallel SMTP sessions            (env CONC, default 20)
#   -m  messages per accept run           (env COUNT, default 10000)
#   -l  payload bytes                     (env SIZE, default 4096)
#   -r  rounds                            (env ROUNDS, default 3)
#   -n  messages per latency run, 0: skip (env LAT_COUNT, default 3000)
# Other env: ACCEPT=0 skips the accept runs, REDIS_PORT (6390), KEEP=1
# keeps the work dir.  Runs in a
# private loopback-only network namespace, as every benchmark here.

set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

CONC=${CONC:-20}
COUNT=${COUNT:-10000}
SIZE=${SIZE:-4096}
ROUNDS=${ROUNDS:-3}
ACCEPT=${ACCEPT:-1}
LAT_COUNT=${LAT_COUNT:-3000}
while getopts 's:m:l:r:n:h' opt; do
    case $opt in
    s) CONC=$OPTARG ;;
    m) COUNT=$OPTARG ;;
    l) SIZE=$OPTARG ;;
    r) ROUNDS=$OPTARG ;;
    n) LAT_COUNT=$OPTARG ;;
    *) sed -n '3,/^$/s/^# \{0,1\}//p' "$0"; exit 2 ;;
    esac
done
export CONC COUNT SIZE ROUNDS ACCEPT LAT_COUNT

bench_netns_reexec "$0" "$@"

REDIS_PORT=${REDIS_PORT:-6390}
KEEP=${KEEP:-0}
[ -x /usr/bin/redis-server ] || bench_die "redis-server is not installed"

work=$(mktemp -d /var/tmp/relay-fleet-bench.XXXXXX)
chmod 755 "$work"
mkdir -p "$work/redis"

cleanup() {
    if [ -f "$work/redis/redis.pid" ]; then
        kill "$(cat "$work/redis/redis.pid")" 2>/dev/null || true
    fi
    if [ "$KEEP" = 1 ]; then
        bench_log "kept $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

/usr/bin/redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
    --dir "$work/redis" --save "" --appendonly no --daemonize yes \
    --pidfile "$work/redis/redis.pid" --logfile "$work/redis/redis.log" \
    || bench_die "redis-server did not start"
for ((i = 0; i < 100; i++)); do
    redis-cli -p "$REDIS_PORT" PING 2>/dev/null | grep -q PONG && break
    sleep 0.1
done

limits() {          # limits MODE: the stream{} lines of a mode
    local scope=
    case $1 in
    none) return 0 ;;
    fleet) scope=" scope=fleet"
           printf '    relay_limit_redis 127.0.0.1:%s;\n' "$REDIS_PORT" ;;
    esac
    printf '    relay_limit client_ip * window=1h messages=1000000000%s;\n' \
        "$scope"
    printf '    relay_limit sender_domain * window=1h messages=1000000000%s;\n' \
        "$scope"
}

declare -A rates=() cpus=()
modes=(none node fleet)

for ((round = 1; round <= ROUNDS && ACCEPT; round++)); do
    for mode in "${modes[@]}"; do
        bench_log "round $round/$ROUNDS: $mode"
        out=$(RELAY_STREAM_EXTRA=$(limits "$mode") \
              "$here/accept.sh" -t relay -s "$CONC" -m "$COUNT" -l "$SIZE" \
              2>"$work/accept.err") \
            || { cat "$work/accept.err" >&2; bench_die "accept.sh failed"; }
        rate=$(printf '%s\n' "$out" | awk '/^relay:/ {print $2; exit}')
        cpu=$(printf '%s\n' "$out" \
              | awk '/cpu: server/ {gsub(/[(]/, "", $5); print $5; exit}')
        printf '%-6s round %d: %s msgs/s, server CPU %s us/msg\n' \
            "$mode" "$round" "$rate" "$cpu"
        rates[$mode]="${rates[$mode]:-} $rate"
        cpus[$mode]="${cpus[$mode]:-} $cpu"
    done
done

median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

if [ "$ACCEPT" = 1 ]; then
echo "----"
# shellcheck disable=SC2086
none=$(median ${rates[none]}) node=$(median ${rates[node]}) \
    fleet=$(median ${rates[fleet]})
for mode in "${modes[@]}"; do
    # shellcheck disable=SC2086
    printf 'accept %-6s %8s msgs/s (median of %d:%s), server CPU %s us/msg\n' \
        "$mode" "$(median ${rates[$mode]})" "$ROUNDS" "${rates[$mode]}" \
        "$(median ${cpus[$mode]})"
done
echo "$none $node $fleet" | awk '{
    printf "fleet/none %.3f, node/none %.3f, fleet/node %.3f: target fleet >= 0.90 x none: %s\n",
        $3 / $1, $2 / $1, $3 / $2, ($3 >= 0.9 * $1) ? "PASS" : "FAIL" }'
printf 'redis: %s keys after the runs\n' \
    "$(redis-cli -p "$REDIS_PORT" DBSIZE)"
fi

[ "$LAT_COUNT" -gt 0 ] || exit 0

declare -A eods=() txns=()
for ((round = 1; round <= ROUNDS; round++)); do
    for mode in "${modes[@]}"; do
        bench_log "latency round $round/$ROUNDS: $mode"
        out=$(RELAY_STREAM_EXTRA=$(limits "$mode") /usr/bin/python3 \
              "$here/latency.py" --targets relay -n "$LAT_COUNT" --probe 0 \
              --size "$SIZE" 2>"$work/latency.err") \
            || { cat "$work/latency.err" >&2; bench_die "latency.py failed"; }
        e=$(printf '%s\n' "$out" | awk '/end-of-data->250/ {
                for (i = 1; i < NF; i++) if ($i == "p50") {print $(i+1); exit}}')
        t=$(printf '%s\n' "$out" | awk '/whole MAIL..250/ {
                for (i = 1; i < NF; i++) if ($i == "p50") {print $(i+1); exit}}')
        printf 'latency %-6s round %d: p50 end of data -> 250 %s ms, whole MAIL..250 %s ms\n' \
            "$mode" "$round" "$e" "$t"
        eods[$mode]="${eods[$mode]:-} $e"
        txns[$mode]="${txns[$mode]:-} $t"
    done
done

echo "----"
# shellcheck disable=SC2086
for mode in "${modes[@]}"; do
    printf 'latency %-6s p50 (median of %d rounds): end of data -> 250 %s ms, whole MAIL..250 %s ms\n' \
        "$mode" "$ROUNDS" "$(median ${eods[$mode]})" "$(median ${txns[$mode]})"
done
# shellcheck disable=SC2086
echo "$(median ${eods[none]}) $(median ${eods[fleet]}) $(median ${txns[none]}) $(median ${txns[fleet]})" | awk '{
    printf "p50 delta fleet - none: end of data -> 250 %+.3f ms (target < 0.3: %s), whole MAIL..250 %+.3f ms\n",
        $2 - $1, ($2 - $1 < 0.3) ? "PASS" : "FAIL", $4 - $3 }'
