#!/usr/bin/env bash
#
# Builds the control plane's load client, bench/control-propagation.c, into
# BUILD_DIR/bench/control-propagation (with the protobuf-c code of proto/,
# generated into BUILD_DIR/gen).  Used by control-propagation.sh and
# control-replicas.sh.
#
#   bench/control-client.sh BUILD_DIR

set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
build=$1

make -s -C "$top/controld" BUILD_DIR="$build" gen
mkdir -p "$build/bench"
cc -O2 -std=gnu11 -I"$build/gen" -o "$build/bench/control-propagation" \
    "$top/bench/control-propagation.c" \
    "$build/gen/relay/control/v1/control.pb-c.c" \
    $(pkg-config --cflags --libs grpc libprotobuf-c)
