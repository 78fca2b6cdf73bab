#!/usr/bin/env bash
#
# tests/unit/run.sh BUILD_DIR
#
# Compiles each tests/unit/test_*.c with module/ngx_relay_parse.c alone
# (the parser must not need the nginx core) against the configured nginx
# headers in BUILD_DIR (./build.sh creates them), runs them, and ends with
# one line "N passed, N failed" counting test cases over all programs.
# A program that does not compile, crashes or prints no summary counts as
# one failed case.  Exits non-zero when anything failed.

set -u

if [ $# -ne 1 ]; then
    echo "usage: $0 BUILD_DIR" >&2
    exit 2
fi

build=$(cd "$1" && pwd) || exit 2
top=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=../tally.sh
. "$top/tests/tally.sh"
unit=$top/tests/unit
out=$build/unit
src=$build/nginx-src/src

if [ ! -f "$build/objs/ngx_auto_config.h" ]; then
    echo "$0: $build/objs/ngx_auto_config.h missing: run ./build.sh first" >&2
    exit 2
fi

mkdir -p "$out"

cc=${CC:-cc}
incs=(-I "$src/core" -I "$src/event" -I "$src/event/modules"
      -I "$src/os/unix" -I "$build/objs" -I "$top/module" -I "$unit")

# the flags nginx builds the module with (objs/Makefile, dpkg-buildflags)
cflags=(-pipe -O2 -W -Wall -Wpointer-arith -Wno-unused-parameter -Werror -g
        -fstack-protector-strong -Wformat -Werror=format-security
        -D_FORTIFY_SOURCE=2)

passed=0
failed=0

# the parser alone, exactly as nginx would compile it: no warnings
if ! "$cc" "${cflags[@]}" -fPIC "${incs[@]}" -c \
        "$top/module/ngx_relay_parse.c" -o "$out/ngx_relay_parse.o"
then
    echo "FAIL module/ngx_relay_parse.c does not compile cleanly"
    failed=$((failed + 1))
fi

sanitizers "$out"

for t in "$unit"/test_*.c; do
    name=$(basename "$t" .c)

    if ! "$cc" "${cflags[@]}" "${san[@]}" "${incs[@]}" -o "$out/$name" \
            "$t" "$top/module/ngx_relay_parse.c"
    then
        echo "FAIL $name: does not compile"
        failed=$((failed + 1))
        continue
    fi

    "$out/$name" > "$out/$name.log" 2>&1
    rc=$?

    tally "$name" "$out/$name.log" "$rc"
done

echo "$passed passed, $failed failed"

[ "$failed" -eq 0 ]
