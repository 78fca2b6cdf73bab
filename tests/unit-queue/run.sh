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

if [ $# -ne 1 ]; then
    echo "usage: $0 BUILD_DIR" >&2
    exit 2
fi

mkdir -p "$1" || exit 2
build=$(cd "$1" && pwd) || exit 2
top=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=../tally.sh
. "$top/tests/tally.sh"
unit=$top/tests/unit-queue
out=$build/unit-queue
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

if ! "$cc" "${cflags[@]}" -fPIC "${incs[@]}" -c "$lib" \
        -o "$out/relay_queue.o"
then
    echo "FAIL lib/relay_queue.c does not compile cleanly"
    failed=$((failed + 1))
fi

san=(-fsanitize=address,undefined -fno-sanitize-recover=all
     -fno-omit-frame-pointer)
echo 'int main(void) { return 0; }' > "$out/san.c"
if ! "$cc" "${san[@]}" "$out/san.c" -o "$out/san" 2>/dev/null \
   || ! "$out/san" 2>/dev/null
then
    san=()
fi

for t in "$unit"/test_*.c; do
    name=$(basename "$t" .c)

    if ! "$cc" "${cflags[@]}" "${san[@]}" "${incs[@]}" -o "$out/$name" \
            "$t" "$lib"
    then
        echo "FAIL $name: does not compile"
        failed=$((failed + 1))
        continue
    fi

    T_DATA=$unit/data T_TMP=$out/tmp "$out/$name" > "$out/$name.log" 2>&1
    rc=$?

    tally "$name" "$out/$name.log" "$rc"
done

echo "$passed passed, $failed failed"

[ "$failed" -eq 0 ]
