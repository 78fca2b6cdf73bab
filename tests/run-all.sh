#!/usr/bin/env bash
#
# Runs every test: C unit tests of the parsers, the policy library and the
# queue library, each fuzz harness for a few seconds (RELAY_FUZZ_SECONDS,
# default 3: they keep building and their seeds stay clean), then the
# integration suite against Debian's nginx with the module, then the
# package test (tests/deb) when BUILD_DIR/deb has the packages (./build.sh
# test builds them; not with SANITIZE=1).  Ends with one line "N passed,
# N failed" over all of them, and a non-zero exit if anything failed.
#
#   tests/run-all.sh BUILD_DIR

set -uo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
build_dir=$(cd "${1:-$top/build}" && pwd)
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT

passed=0
failed=0
status=0

count() {       # count WORD FILE: the number before WORD on the last summary
    grep -Eo "[0-9]+ $1" "$2" | tail -n 1 | grep -Eo '^[0-9]+' || echo 0
}

echo "== unit tests"
"$top/tests/unit/run.sh" "$build_dir" 2>&1 | tee "$log/unit"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
passed=$((passed + $(count passed "$log/unit")))
failed=$((failed + $(count failed "$log/unit")))

echo "== policy library unit tests"
"$top/tests/unit-policy/run.sh" "$build_dir" 2>&1 | tee "$log/unit-policy"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
passed=$((passed + $(count passed "$log/unit-policy")))
failed=$((failed + $(count failed "$log/unit-policy")))

echo "== queue library unit tests"
"$top/tests/unit-queue/run.sh" "$build_dir" 2>&1 | tee "$log/unit-queue"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
passed=$((passed + $(count passed "$log/unit-queue")))
failed=$((failed + $(count failed "$log/unit-queue")))

echo "== fuzz harnesses, a few seconds each (./build.sh fuzz for longer)"
"$top/tests/fuzz/run.sh" "$build_dir" "${RELAY_FUZZ_SECONDS:-3}" 2>&1 \
    | tee "$log/fuzz"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
passed=$((passed + $(count passed "$log/fuzz")))
failed=$((failed + $(count failed "$log/fuzz")))

echo "== integration tests"
export RELAY_MODULE="$build_dir/objs/ngx_stream_relay_module.so"

# SANITIZE=1 ./build.sh test: nginx gets gcc's ASan and UBSan runtimes
# preloaded (relayharness.py), controld and relayctl have them built in;
# reports go to files, and any file is a failure

if [ "${RELAY_SANITIZE:-0}" = 1 ]; then
    san_log=$log/sanitizer
    mkdir -p "$san_log"
    chmod 0777 "$log" "$san_log"           # workers run as nobody
    export RELAY_SANITIZE_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
    export ASAN_OPTIONS="log_path=$san_log/asan:detect_leaks=0:detect_odr_violation=0:allow_user_segv_handler=1"
    export UBSAN_OPTIONS="log_path=$san_log/ubsan:print_stacktrace=1"
    echo "(sanitized build: reports to $san_log)"
fi

(cd "$top" && /usr/bin/python3 -m pytest -p no:cacheprovider -q \
    tests/integration) 2>&1 | tee "$log/integration"
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] || status=1
passed=$((passed + $(count passed "$log/integration")))
failed=$((failed + $(count failed "$log/integration")
               + $(count error "$log/integration")))
[ "$rc" -eq 5 ] && { echo "integration: no tests collected"; status=1; }

if [ "${RELAY_SANITIZE:-0}" = 1 ]; then
    reports=$(find "$san_log" -type f | wc -l)
    if [ "$reports" -gt 0 ]; then
        for f in $(find "$san_log" -type f | head -20); do
            echo "FAIL sanitizer report $f:"
            head -40 "$f"
        done
        failed=$((failed + reports))
        status=1
    else
        echo "sanitizers: no report"
    fi
fi

# last: they install the packages on this machine, and purge them
echo "== package tests"
if ls "$build_dir"/deb/*.deb >/dev/null 2>&1; then
    (cd "$top" && RELAY_DEB_DIR="$build_dir/deb" /usr/bin/python3 -m pytest \
        -p no:cacheprovider -q tests/deb) 2>&1 | tee "$log/deb"
    rc=${PIPESTATUS[0]}
    [ "$rc" -eq 0 ] || status=1
    passed=$((passed + $(count passed "$log/deb")))
    failed=$((failed + $(count failed "$log/deb") + $(count error "$log/deb")))
else
    echo "package tests: not run, no $build_dir/deb/*.deb (./build.sh deb)"
fi

echo "$passed passed, $failed failed"
exit $status
