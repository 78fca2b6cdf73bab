#!/usr/bin/env bash
#
# tests/unit-queue/run.sh BUILD_DIR
#
# Builds each tests/unit-queue/test_*.c with lib/relay_queue.c alone (libc
# and POSIX only: the queue library must not need nginx) into
# BUILD_DIR/unit-queue, runs it on a scratch spool there, and ends with one
# line "N passed, N failed" over all programs.  The library is first
# compiled alone with the flags nginx builds the module with (-Werror,
# _FORTIFY_SOURCE).  Exits non-zero when anything failed.

set -u

top=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=../tally.sh
. "$top/tests/tally.sh"

[ $# -eq 1 ] || { echo "usage: $0 BUILD_DIR" >&2; exit 2; }
out=$(mkdir -p "$1/unit-queue" && cd "$1/unit-queue" && pwd) || exit 2
unit=$top/tests/unit-queue
lib=$top/lib/relay_queue.c

rm -rf "$out/tmp"
mkdir -p "$out/tmp"

cc=${CC:-cc}
incs=(-I "$top/lib" -I "$unit")

cflags=(-pipe -O2 -W -Wall -Wextra -Wpointer-arith -Wno-unused-parameter
        -Werror -g -fstack-protector-strong -Wformat
        -Werror=format-security -D_FORTIFY_SOURCE=2)

passed=0
failed=0

compiles_cleanly lib/relay_queue.c \
    "$cc" "${cflags[@]}" -fPIC "${incs[@]}" -c "$lib" -o "$out/relay_queue.o"

sanitizers "$out"
run_env=(T_DATA="$unit/data" T_TMP="$out/tmp")

for t in "$unit"/test_*.c; do
    build_and_run "$(basename "$t" .c)" "$out" \
        "$cc" "${cflags[@]}" "${san[@]}" "${incs[@]}" "$t" "$lib"
done

echo "$passed passed, $failed failed"

[ "$failed" -eq 0 ]
