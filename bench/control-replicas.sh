#!/usr/bin/env bash
#
# controld replicas on etcd against the file store, on one machine:
#
#   etcd store   3 etcd members (Debian's etcd-server) and 3 controld
#                replicas (--store etcd://...) on loopback, N subscribers
#                (Node.Session streams) spread over the replicas, Apply
#                through the first: the time from Apply until every
#                subscriber ACKed, ROUNDS times (p50/p99/max); then the
#                second replica is killed (SIGKILL) and its subscribers
#                reconnect to the next ones: the time until each is back
#                on another (p50/p99/max over them)
#   file store   one controld with a data directory, the same N and ROUNDS
#
#   bench/control-replicas.sh [BUILD_DIR] [N]          (default N: 1000)
#
# The load client is bench/control-propagation.c (built into
# BUILD_DIR/bench); controld runs --insecure (each subscriber is a node id
# of its own).  Ports: free ones in 24900-24999.  Prints both results and
# a table of the two side by side.

set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$top/build}" && pwd)
n=${2:-1000}
rounds=${ROUNDS:-20}
channels=${CHANNELS:-4}
controld=${CONTROLD:-$build/controld/controld}

[ -x "$controld" ] || { echo "no controld at $controld" >&2; exit 1; }
command -v etcd >/dev/null || { echo "no etcd (etcd-server)" >&2; exit 1; }

"$top/bench/control-client.sh" "$build"

work=$(mktemp -d)
pids=()
cleanup() {
    local p
    for p in "${pids[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    [ -n "${KEEP:-}" ] && echo "logs kept in $work" >&2 || rm -rf "$work"
}
trap cleanup EXIT

next_port=24900
port() {            # a free TCP port of 24900-24999 into $REPLY
    while [ $next_port -le 24999 ]; do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$next_port") 2>/dev/null; then
            REPLY=$next_port
            next_port=$((next_port + 1))
            return
        fi
        next_port=$((next_port + 1))
    done
    echo "no free port" >&2
    exit 1
}

wait_log() {        # wait_log FILE TEXT
    local i
    for i in $(seq 100); do
        grep -q "$2" "$1" && return 0
        sleep 0.1
    done
    echo "no \"$2\" in $1:" >&2
    cat "$1" >&2
    exit 1
}

# ---------------------------------------------------------------- etcd

cluster=
clients=()
for i in 1 2 3; do
    port; cp=$REPLY
    port; pp=$REPLY
    clients+=("127.0.0.1:$cp")
    peers[$i]=$pp
    cports[$i]=$cp
    cluster+="${cluster:+,}m$i=http://127.0.0.1:$pp"
done

for i in 1 2 3; do
    etcd --name "m$i" --data-dir "$work/m$i" \
        --listen-client-urls "http://127.0.0.1:${cports[$i]}" \
        --advertise-client-urls "http://127.0.0.1:${cports[$i]}" \
        --listen-peer-urls "http://127.0.0.1:${peers[$i]}" \
        --initial-advertise-peer-urls "http://127.0.0.1:${peers[$i]}" \
        --initial-cluster "$cluster" --initial-cluster-state new \
        --initial-cluster-token "bench-$$" \
        --logger zap --log-level warn 2>"$work/m$i.log" &
    pids+=($!)
done

endpoints=$(IFS=,; echo "${clients[*]}")
for _ in $(seq 100); do
    ETCDCTL_API=3 etcdctl --endpoints "$endpoints" endpoint health \
        >/dev/null 2>&1 && break
    sleep 0.2
done

targets=
ctld_pids=()
for r in a b c; do
    port
    "$controld" --insecure --listen "127.0.0.1:$REPLY" \
        --store "etcd://$endpoints" --replica "$r" \
        2>"$work/controld-$r.log" &
    pids+=($!)
    ctld_pids+=($!)
    targets+="${targets:+,}127.0.0.1:$REPLY"
done

for r in a b c; do
    wait_log "$work/controld-$r.log" "etcd watch from"
done

echo "== etcd store: 3 members, 3 replicas ($targets)"
"$build/bench/control-propagation" -t "$targets" -n "$n" -c "$channels" \
    -r "$rounds" -p "$(IFS=,; echo "${ctld_pids[*]}")" \
    -k "${ctld_pids[1]}" | tee "$work/etcd.out"

# ---------------------------------------------------------------- files

port
"$controld" --insecure --listen "127.0.0.1:$REPLY" --data-dir "$work/data" \
    2>"$work/controld-file.log" &
pids+=($!)
file_pid=$!
wait_log "$work/controld-file.log" "listening on"

echo "== file store: one controld"
"$build/bench/control-propagation" -t "127.0.0.1:$REPLY" -n "$n" \
    -c "$channels" -r "$rounds" -p "$file_pid" | tee "$work/file.out"

field() {           # field NAME FILE
    grep -o "$1=[0-9.]*ms" "$2" | head -n 1 | sed 's/.*=//'
}

echo
printf '%-44s %-14s %-14s\n' "$n subscribers, $rounds applies" \
    "etcd store" "file store"
for f in p50 p99 max; do
    printf '%-44s %-14s %-14s\n' "apply until every ACK, $f" \
        "$(field $f "$work/etcd.out")" "$(field $f "$work/file.out")"
done
back=$(grep "killed replica" "$work/etcd.out" || true)
for f in p50 p99 max; do
    printf '%-44s %-14s %-14s\n' "killed replica, back on another, $f" \
        "$(echo "$back" | grep -o "$f=[0-9]*ms" | sed 's/.*=//')" \
        "n/a (one)"
done
