#!/usr/bin/env bash
#
# bench/observers.sh: what the observers cost.  In the same run, on the
# same fresh file system, the relay relays COUNT messages end to end
# (smtp-source -> relay -> smtp-sink, as bench/relay.sh) with its observers
# off ("relay_metrics off", no accounting log) and on (metrics counted and
# scraped every second over http, "relay_accounting_log ... buffer=64k
# flush=1s"), the two in alternating order round after round.  Prints per
# run accepted and end-to-end msgs/s and server CPU per message, then the
# medians and their ratio on/off, and the median of each round's own ratio
# on/off, the figure other load on the machine disturbs least (target: at
# most 5% slower, ratio >= 0.95).
#
# Then a scrape of a node whose labels are at the scale of a hosting
# provider: 100 egress addresses (100 pools of one), 50 tenants (50
# listeners with relay_tenant), 200 destination patterns
# (relay_destination_limit), all of them used by delivered mail; SCRAPES
# timed GETs of /metrics (target: under 10 ms each), and the number of
# series.
#
# Usage: bench/observers.sh [-s SESSIONS] [-m COUNT] [-l SIZE] [-r ROUNDS]
#   -s  parallel smtp-source sessions   (env CONC, default 20)
#   -m  messages per run                (env COUNT, default 5000)
#   -l  message size                    (env SIZE, default 4096)
#   -r  rounds (each: off and on)       (env ROUNDS, default 3; 0: only
#                                        the scrape)
# Env: SCRAPES (default 200), RUN_TIMEOUT (s per run, default 300),
# RELAY_PORT (2525), SINK_PORT (2600), METRICS_PORT (9025), KEEP=1 keeps
# the work dir, BENCH_FS (lib.sh).  Runs in a private loopback-only network
# namespace (lib.sh).

set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
. "$here/lib.sh"

CONC=${CONC:-20}
COUNT=${COUNT:-5000}
SIZE=${SIZE:-4096}
ROUNDS=${ROUNDS:-3}
while getopts 's:m:l:r:h' opt; do
    case $opt in
    s) CONC=$OPTARG ;;
    m) COUNT=$OPTARG ;;
    l) SIZE=$OPTARG ;;
    r) ROUNDS=$OPTARG ;;
    *) sed -n '3,/^$/s/^# \{0,1\}//p' "$0"; exit 2 ;;
    esac
done
export CONC COUNT SIZE ROUNDS

bench_netns_reexec "$0" "$@"

RUN_TIMEOUT=${RUN_TIMEOUT:-300}
RELAY_PORT=${RELAY_PORT:-2525}
SINK_PORT=${SINK_PORT:-2600}
METRICS_PORT=${METRICS_PORT:-9025}
SCRAPES=${SCRAPES:-200}
KEEP=${KEEP:-0}

work=$(mktemp -d /var/tmp/relay-observers.XXXXXX)
chmod 755 "$work"
root=$work
scraper=

cleanup() {
    local rc=$?
    [ -n "$scraper" ] && kill "$scraper" 2>/dev/null
    [ "$rc" -ne 0 ] && bench_dump_logs "$root/relay"
    relay_stop "$root/relay" 2>/dev/null || true
    sink_stop "$root/sink" 2>/dev/null || true
    [ "$KEEP" = 1 ] || bench_trash_empty "$root/relay" "$root"
    bench_fs_teardown "$work"
    if [ "$KEEP" != 1 ]; then rm -rf "$work"; sync; else bench_log "kept $work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

http_metrics="http {
    access_log off;
    server {
        listen 127.0.0.1:$METRICS_PORT;
        location = /metrics { relay_metrics; }
    }
}"

delivery="    relay_delivery on;
    relay_resolver 127.0.0.1:1;
    relay_route remote.test [127.0.0.1]:$SINK_PORT;"

# observers MODE: the configuration of a run with them off or on
observers() {
    if [ "$1" = on ]; then
        export RELAY_STREAM_EXTRA="$delivery
    relay_accounting_log logs/accounting.log buffer=64k flush=1s;"
        export RELAY_MAIN_EXTRA=$http_metrics
    else
        export RELAY_STREAM_EXTRA="$delivery
    relay_metrics off;"
        export RELAY_MAIN_EXTRA=
    fi
}

root=$(bench_fs_setup "$work")
fs_settle "$root"
sink_start "$root/sink" "$SINK_PORT"

printf 'observers.sh: %d messages a run, %d sessions, %d bytes, %d rounds; spools on %s; %d cores, load average %s\n' \
    "$COUNT" "$CONC" "$SIZE" "$ROUNDS" \
    "$(df --output=fstype,source "$root" | tail -1 | tr -s ' ' | sed 's/^ //')" \
    "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"

declare -A A E C
ratios_a=() ratios_e=()
for ((round = 1; round <= ROUNDS; round++)); do
    echo " round $round/$ROUNDS"
    # alternate the order: drift of the machine favours neither
    if ((round % 2)); then modes=(off on); else modes=(on off); fi
    for mode in "${modes[@]}"; do
        observers "$mode"
        relay_clean "$root/relay" "$RELAY_PORT" 2>/dev/null
        if [ "$mode" = on ]; then
            (while :; do
                 curl -s -o /dev/null "http://127.0.0.1:$METRICS_PORT/metrics"
                 sleep 1
             done) &
            scraper=$!
        fi
        bench_e2e_run "observers-$mode" "$RELAY_PORT" relay_in_queue \
            "$root/relay" "$SIZE"
        A[$mode]+=" $acc" E[$mode]+=" $e2e" C[$mode]+=" $cpu_us"
        eval "last_acc_$mode=$acc last_e2e_$mode=$e2e"
        if [ "$mode" = on ]; then
            kill "$scraper" 2>/dev/null; wait "$scraper" 2>/dev/null || true
            scraper=
            relay_stop "$root/relay"
            n=$(grep -c '"type":"received"' "$root/relay/logs/accounting.log" || true)
            [ "$n" -eq "$COUNT" ] \
                || bench_log "accounting log: $n received records, not $COUNT"
            rm -f "$root/relay/logs/accounting.log"
        else
            relay_stop "$root/relay"
        fi
    done
    # the two runs of a round met the same machine: their ratio is the
    # figure that load from elsewhere disturbs least
    ratios_a+=("$(awk -v a="$last_acc_off" -v b="$last_acc_on" 'BEGIN {printf "%.3f", b / a}')")
    ratios_e+=("$(awk -v a="$last_e2e_off" -v b="$last_e2e_on" 'BEGIN {printf "%.3f", b / a}')")
done

summary=()
for what in A E C; do
    ((ROUNDS > 0)) || break
    declare -n v=$what
    # shellcheck disable=SC2086
    off=$(median ${v[off]})
    # shellcheck disable=SC2086
    on=$(median ${v[on]})
    case $what in
    A) name="accepted  " ;;
    E) name="end-to-end" ;;
    C) name="server CPU" ;;
    esac
    if [ "$what" = C ]; then
        summary+=("$(awk -v n="$name" -v a="$off" -v b="$on" -v ra="${v[off]}" -v rb="${v[on]}" 'BEGIN {
            printf "%s: off %.0f us/msg, on %.0f us/msg (%+.1f%%) (rounds off:%s, on:%s)", n, a, b, 100 * (b - a) / a, ra, rb }')")
    else
        summary+=("$(awk -v n="$name" -v a="$off" -v b="$on" -v ra="${v[off]}" -v rb="${v[on]}" 'BEGIN {
            printf "%s: off %.1f msgs/s, on %.1f msgs/s, on/off %.3f (target >= 0.95: %s) (rounds off:%s, on:%s)", n, a, b, b / a, (b / a >= 0.95) ? "PASS" : "FAIL", ra, rb }')")
    fi
    unset -n v
done
for what in a e; do
    ((ROUNDS > 0)) || break
    declare -n r=ratios_$what
    summary+=("$(awk -v n="$([ $what = a ] && echo accepted || echo end-to-end)" -v m="$(median "${r[@]}")" -v rs="${r[*]}" 'BEGIN {
        printf "%s, on/off of each round: median %.3f (target >= 0.95: %s) (rounds: %s)", n, m, (m >= 0.95) ? "PASS" : "FAIL", rs }')")
    unset -n r
done

# --------------------------------------------------------- scrape at scale

bench_log "scrape: 100 egress addresses, 50 tenants, 200 destination patterns"

extra="$delivery"
for ((i = 1; i <= 200; i++)); do
    extra+="
    relay_route d$i.test [127.0.0.1]:$SINK_PORT;
    relay_destination_limit d$i.test connections=50;"
done
for ((i = 1; i <= 100; i++)); do
    extra+="
    relay_egress_pool p$i ehlo=relay.test 127.0.1.$i;
    relay_egress_rule sender_domain s$i.test p$i;"
done
for ((i = 1; i <= 50; i++)); do
    extra+="
    server {
        listen 127.0.0.1:$((RELAY_PORT + 100 + i));
        relay_smtp;
        relay_trusted_networks 127.0.0.0/8;
        relay_tenant t$i;
    }"
done
# the server's own time of each scrape too: $request_time in a log
export RELAY_STREAM_EXTRA=$extra RELAY_MAIN_EXTRA="http {
    log_format scrape \$request_time;
    server {
        listen 127.0.0.1:$METRICS_PORT;
        location = /metrics { relay_metrics; access_log logs/scrape.log scrape; }
    }
}"
relay_clean "$root/relay" "$RELAY_PORT" 2>/dev/null

# one message per destination pattern, from every pool and every tenant
for ((i = 1; i <= 200; i++)); do
    /usr/sbin/smtp-source -s 1 -m 1 -l 512 -M client.test \
        -f "sender@s$(( (i - 1) % 100 + 1 )).test" -t "rcpt@d$i.test" \
        "127.0.0.1:$((RELAY_PORT + 100 + (i - 1) % 50 + 1))" >/dev/null \
        || bench_die "smtp-source to the tenant listeners failed"
done
for ((i = 0; i < 600; i++)); do
    [ "$(relay_in_queue "$root/relay")" -eq 0 ] && break
    sleep 0.05
done

curl -s "http://127.0.0.1:$METRICS_PORT/metrics" > "$work/scrape.txt"
: > "$root/relay/logs/scrape.log"
series=$(grep -vc '^#' "$work/scrape.txt")
labels=$(awk -F'[{}]' '/^relay_egress_deliveries_total/ {e[$2]} /^relay_tenant_accepted_messages_total/ {t[$2]} /^relay_destination_deliveries_total/ {split($2, a, ","); d[a[1]]} END {printf "%d egress series, %d tenants, %d destinations", length(e), length(t), length(d)}' "$work/scrape.txt")
times=()
for ((i = 0; i < SCRAPES; i++)); do
    times+=("$(curl -s -o /dev/null -w '%{time_total}' "http://127.0.0.1:$METRICS_PORT/metrics")")
done
relay_stop "$root/relay"

summary+=("$(sort -g "$root/relay/logs/scrape.log" | awk '
    {t[NR] = $1 * 1000}
    END {
        printf "scrape    : the server'"'"'s time ($request_time, 1 ms steps) of %d scrapes: p50 %.0f ms, p99 %.0f ms, max %.0f ms",
            NR, t[int(NR * 0.5) + 1], t[(int(NR * 0.99) > 0) ? int(NR * 0.99) : 1], t[NR]
    }')")
summary+=("$(printf '%s\n' "${times[@]}" | sort -g | awk -v n="$series" -v b="$(wc -c < "$work/scrape.txt")" -v l="$labels" '
    {t[NR] = $1 * 1000}
    END {
        p50 = t[int(NR * 0.5) + 1]; p99 = t[int(NR * 0.99) > 0 ? int(NR * 0.99) : 1]; mx = t[NR]
        printf "scrape    : %d series, %d bytes (%s); %d scrapes: p50 %.2f ms, p99 %.2f ms, max %.2f ms (target < 10 ms: %s)",
            n, b, l, NR, p50, p99, mx, (p99 < 10) ? "PASS" : "FAIL"
    }')")

echo "----"
printf '%s\n' "${summary[@]}"
