#!/usr/bin/env bash
#
# Policy propagation through controld: time from Admin.Apply until every
# subscriber (a Node.Session stream) has ACKed the new version.
#
#   bench/control-propagation.sh [BUILD_DIR] [N ...]     (default N: 100 1000)
#
# Builds the C load client (control-propagation.c) into BUILD_DIR/bench,
# starts BUILD_DIR/controld/controld --insecure on a port in 24500-24999
# from a temp dir (insecure: each stream is a node id of its own, which on
# mTLS would need a certificate each), runs ROUNDS applies (default 20) per
# N over CHANNELS connections (default 4), prints the client's line with
# p50/p99/max and controld's RSS, and stops controld.

set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$top/build}" && pwd)
shift || true
[ $# -gt 0 ] || set -- 100 1000
rounds=${ROUNDS:-20}
channels=${CHANNELS:-4}
controld=${CONTROLD:-$build/controld/controld}

[ -x "$controld" ] || { echo "no controld at $controld" >&2; exit 1; }

"$top/bench/control-client.sh" "$build"

work=$(mktemp -d)
pid=
cleanup() {
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null && wait "$pid" || true
    rm -rf "$work"
}
trap cleanup EXIT

port=
for p in $(seq 24900 24999); do
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        port=$p
        break
    fi
done
[ -n "$port" ] || { echo "no free port" >&2; exit 1; }

for n in "$@"; do
    rm -rf "$work/data"
    "$controld" --insecure --listen "127.0.0.1:$port" \
        --data-dir "$work/data" 2>"$work/controld.log" &
    pid=$!
    for _ in $(seq 50); do
        grep -q "listening on" "$work/controld.log" && break
        sleep 0.1
    done

    echo "rss before: $(awk '/VmRSS/ {print $2 "kB"}' /proc/$pid/status)"
    "$build/bench/control-propagation" -t "127.0.0.1:$port" -n "$n" \
        -c "$channels" -r "$rounds" -p "$pid"

    kill -TERM "$pid"
    wait "$pid"
    pid=
    grep -c " ACK version " "$work/controld.log" | sed 's/^/ACK lines logged: /'
done
