#!/usr/bin/env bash
#
# tests/unit-controld/run.sh BUILD_DIR
#
# Builds tests/unit-controld/test_*.c with controld/ctld_policy.c and
# controld/ctld_diff.c (libc and protobuf-c only) into BUILD_DIR/unit-controld,
# runs them and ends with one line "N passed, N failed" over all programs.
# The policy code is first compiled alone with the flags nginx builds the
# module with (-Werror, _FORTIFY_SOURCE), since the module links it too.
# The protobuf-c code is generated into BUILD_DIR/gen when missing.
# Exits non-zero when anything failed.

set -u

if [ $# -ne 1 ]; then
    echo "usage: $0 BUILD_DIR" >&2
    exit 2
fi

mkdir -p "$1" || exit 2
build=$(cd "$1" && pwd) || exit 2
top=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=../tally.sh
. "$top/tests/tally.sh"
unit=$top/tests/unit-controld
out=$build/unit-controld
gen=$build/gen
pbc=$gen/relay/control/v1/control.pb-c.c

mkdir -p "$out"

if [ ! -f "$pbc" ] || [ "$top/proto/relay/control/v1/control.proto" -nt "$pbc" ]
then
    mkdir -p "$gen"
    protoc-c --proto_path="$top/proto" --c_out="$gen" \
        relay/control/v1/control.proto || exit 2
fi

cc=${CC:-cc}
incs=(-I "$gen" -I "$top/controld" -I "$unit")
pbflags=$(pkg-config --cflags libprotobuf-c)
pblibs=$(pkg-config --libs libprotobuf-c)

cflags=(-pipe -O2 -W -Wall -Wextra -Wpointer-arith -Wno-unused-parameter
        -Werror -g -fstack-protector-strong -Wformat
        -Werror=format-security -D_FORTIFY_SOURCE=2)

passed=0
failed=0

for f in ctld_policy.c ctld_diff.c; do
    compiles_cleanly "controld/$f" \
        "$cc" "${cflags[@]}" $pbflags -fPIC "${incs[@]}" -c \
        "$top/controld/$f" -o "$out/${f%.c}.o"
done

sanitizers "$out"
run_env=(CTLD_POLICY_EXAMPLE="$top/config/policy.example")

for t in "$unit"/test_*.c; do
    build_and_run "$(basename "$t" .c)" "$out" \
        "$cc" "${cflags[@]}" "${san[@]}" $pbflags "${incs[@]}" \
        "$t" "$top/controld/ctld_policy.c" "$top/controld/ctld_diff.c" \
        "$pbc" $pblibs
done

echo "$passed passed, $failed failed"

[ "$failed" -eq 0 ]
