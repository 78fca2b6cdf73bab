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
      -I "$src/os/unix" -I "$build/objs" -I "$top/module" -I "$top/lib" -I "$unit")

# the flags nginx builds the module with (objs/Makefile, dpkg-buildflags)
cflags=(-pipe -O2 -W -Wall -Wpointer-arith -Wno-unused-parameter -Werror -g
        -fstack-protector-strong -Wformat -Werror=format-security
        -D_FORTIFY_SOURCE=2)

passed=0
failed=0

# the parser alone, exactly as nginx would compile it: no warnings
compiles_cleanly module/ngx_relay_parse.c \
    "$cc" "${cflags[@]}" -fPIC "${incs[@]}" -c \
    "$top/module/ngx_relay_parse.c" -o "$out/ngx_relay_parse.o"

# sanitizers when the compiler has them: overreads, UB and leaks fail
sanitizers "$out"

run_env=(RELAY_UNIT_DATA="$unit/data")

for t in "$unit"/test_*.c; do
    name=$(basename "$t" .c)

    # " * link: module/FILE.c ... -lLIB": more of the module, whose calls
    # into the nginx core are weak stand-ins (tests/stubs.sh)

    link=$(sed -n 's/^ \* link: //p' "$t")
    extra=()
    libs=()

    for w in $link; do
        case $w in
        -l*) libs+=("$w") ;;
        *)   extra+=("$top/$w") ;;
        esac
    done

    if [ ${#extra[@]} -gt 0 ]; then
        for f in "${extra[@]}"; do
            "$cc" "${cflags[@]}" "${san[@]}" "${incs[@]}" -c "$f" \
                -o "$out/$name.$(basename "$f" .c).o" || true
        done

        "$top/tests/stubs.sh" "$out/$name".*.o > "$out/$name.stubs.c"
        extra+=("$out/$name.stubs.c")
    fi

    build_and_run "$name" "$out" \
        "$cc" "${cflags[@]}" "${san[@]}" "${incs[@]}" \
        "$t" "$top/module/ngx_relay_parse.c" "${extra[@]}" "${libs[@]}"
done

echo "$passed passed, $failed failed"

[ "$failed" -eq 0 ]
