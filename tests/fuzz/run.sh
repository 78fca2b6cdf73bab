#!/usr/bin/env bash
#
# tests/fuzz/run.sh BUILD_DIR [SECONDS] [NAME ...]
#
# Builds every fuzz harness (tests/fuzz/fuzz_NAME.c) with clang's
# libFuzzer, AddressSanitizer and UndefinedBehaviorSanitizer into
# BUILD_DIR/fuzz, then runs each for SECONDS (default 5) on its seeds
# (tests/fuzz/corpus/NAME) and the corpus it grew before
# (BUILD_DIR/fuzz/corpus/NAME).  A harness that does not build, or finds
# a crash, a sanitizer report, a leak or a timeout, counts as one failure
# (the input is kept as BUILD_DIR/fuzz/artifacts/NAME-*).  Ends with one
# line "N passed, N failed" and appends each run to BUILD_DIR/fuzz/ledger
# ("date name seconds runs result"): how long each harness ran clean.
#
# Harnesses: "parse" ones link module/ngx_relay_parse.c alone, "lib" ones
# the shared library lib/, "core" ones name more of the module on a
# " * link:" line and get weak stand-ins for the nginx core
# (tests/stubs.sh).

set -u

if [ $# -lt 1 ]; then
    echo "usage: $0 BUILD_DIR [SECONDS] [NAME ...]" >&2
    exit 2
fi

build=$(cd "$1" && pwd) || exit 2
secs=${2:-5}
shift $(( $# >= 2 ? 2 : 1 ))

top=$(cd "$(dirname "$0")/../.." && pwd)
fuzz=$top/tests/fuzz
out=$build/fuzz
src=$build/nginx-src/src
gen=$build/gen

harnesses=(
    "smtp_command parse"
    "smtp_data parse"
    "smtp_reply parse"
    "ehlo parse"
    "auth parse"
    "pop3 parse"
    "queue_header lib"
    "policy_text lib"
    "snapshot lib"
    "journal core"
    "dns core"
)

cc=${FUZZ_CC:-clang}
flags=(-g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
       -fno-omit-frame-pointer -Wall -Wno-unused-parameter)
ngx=(-I "$src/core" -I "$src/event" -I "$src/event/modules"
     -I "$src/os/unix" -I "$build/objs" -I "$top/module" -I "$top/lib"
     -I "$fuzz")
libincs=(-I "$gen" -I "$top/lib" -I "$fuzz")
libsrcs=()
for name in $(sed -n 's/^RELAY_LIB *+= *//p' "$top/lib/lib.mk"); do
    libsrcs+=("$top/lib/$name.c")
done

if ! command -v "$cc" >/dev/null; then
    echo "$0: $cc not found (Debian's clang)" >&2
    exit 2
fi

if [ ! -f "$build/objs/ngx_auto_config.h" ] \
   || [ ! -f "$gen/relay/control/v1/control.pb-c.c" ]
then
    echo "$0: run ./build.sh first (nginx headers, generated code)" >&2
    exit 2
fi

mkdir -p "$out/corpus" "$out/artifacts"

passed=0
failed=0


# build NAME KIND: BUILD_DIR/fuzz/NAME, unless newer than its sources

build_one() {
    local name=$1 kind=$2 bin=$out/$1 h=$fuzz/fuzz_$1.c deps link w
    local extra=() libs=() objs=()

    case $kind in
    parse) deps=("$h" "$fuzz/fuzz.h" "$top/tests/data_reference.h"
                 "$top/module/ngx_relay_parse.c"
                 "$top/module/ngx_relay_parse.h") ;;
    lib)   deps=("$h" "$fuzz/fuzz.h" "$fuzz/fuzz_policy_text.c"
                 "${libsrcs[@]}" "$top"/lib/*.h) ;;
    core)  deps=("$h" "$fuzz/fuzz.h" "$top"/module/*.[ch]) ;;
    esac

    if [ -x "$bin" ]; then
        local stale=0 d
        for d in "${deps[@]}"; do
            [ "$d" -nt "$bin" ] && stale=1
        done
        [ $stale -eq 0 ] && return 0
    fi

    case $kind in
    parse)
        "$cc" "${flags[@]}" "${ngx[@]}" "$h" "$top/module/ngx_relay_parse.c" \
            -o "$bin"
        ;;
    lib)
        "$cc" "${flags[@]}" "${libincs[@]}" \
            $(pkg-config --cflags libprotobuf-c) "$h" "${libsrcs[@]}" \
            "$gen/relay/control/v1/control.pb-c.c" \
            $(pkg-config --libs libprotobuf-c) -o "$bin"
        ;;
    core)
        link=$(sed -n 's/^ \* link: //p' "$h")
        for w in $link; do
            case $w in
            -l*) libs+=("$w") ;;
            *)   extra+=("$top/$w") ;;
            esac
        done

        "$cc" "${flags[@]}" "${ngx[@]}" -c "$h" -o "$out/$name.o" || return 1
        objs=("$out/$name.o")

        for w in "${extra[@]}"; do
            "$cc" "${flags[@]}" "${ngx[@]}" -c "$w" \
                -o "$out/$name.$(basename "$w" .c).o" || return 1
            objs+=("$out/$name.$(basename "$w" .c).o")
        done

        "$top/tests/stubs.sh" "${objs[@]}" > "$out/$name.stubs.c" \
            || return 1

        "$cc" "${flags[@]}" "${objs[@]}" "$out/$name.stubs.c" \
            "$top/module/ngx_relay_parse.c" "${ngx[@]}" "${libs[@]}" \
            -o "$bin"
        ;;
    esac
}


run_one() {
    local name=$1 log=$out/$1.log rc runs seeds dict=()

    seeds=$fuzz/corpus/$name
    mkdir -p "$out/corpus/$name" "$seeds"
    [ -f "$fuzz/$name.dict" ] && dict=(-dict="$fuzz/$name.dict")

    "$out/$name" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 "${dict[@]}" \
        -artifact_prefix="$out/artifacts/$name-" \
        "$out/corpus/$name" "$seeds" > "$log" 2>&1
    rc=$?

    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    runs=${runs:-0}

    if [ $rc -eq 0 ]; then
        echo "fuzz $name: $runs runs in ${secs}s, clean"
        echo "$(date -u +%FT%TZ) $name $secs $runs clean" >> "$out/ledger"
        passed=$((passed + 1))
    else
        echo "FAIL fuzz $name: exit $rc after $runs runs (log $log)"
        grep -E '^(==[0-9]+==ERROR|SUMMARY|.*runtime error|.*assertion)' \
            "$log" | head -5
        grep -E 'Test unit written to' "$log" | head -1
        echo "$(date -u +%FT%TZ) $name $secs $runs FAILED" >> "$out/ledger"
        failed=$((failed + 1))
    fi
}


wanted=("$@")

for entry in "${harnesses[@]}"; do
    set -- $entry
    name=$1
    kind=$2

    if [ ${#wanted[@]} -gt 0 ] && [[ " ${wanted[*]} " != *" $name "* ]]; then
        continue
    fi

    if [ ! -f "$fuzz/fuzz_$name.c" ]; then
        continue
    fi

    if ! build_one "$name" "$kind" > "$out/$name.build.log" 2>&1; then
        echo "FAIL fuzz $name: does not build"
        cat "$out/$name.build.log"
        rm -f "$out/$name"
        failed=$((failed + 1))
        continue
    fi

    if [ "$secs" -gt 0 ]; then
        run_one "$name"
    else
        passed=$((passed + 1))
    fi
done

echo "$passed passed, $failed failed"

[ "$failed" -eq 0 ]
