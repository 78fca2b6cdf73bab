# tests/tally.sh: sourced by the C unit test runners (tests/unit/run.sh,
# tests/unit-policy/run.sh, tests/unit-queue/run.sh).  Each test program
# prints lines of its own and ends with "NAME: N passed, N failed"; tally
# NAME LOG RC shows its output and adds its counts to $passed and $failed
# (a missing summary, or a non-zero exit with no failed case, counts as one
# failure).  The steps every runner takes: sanitizers, compiles_cleanly,
# build_and_run.

run_env=()

tally() {
    local name=$1 log=$2 rc=$3 summary p f

    grep -v -E '^[a-z_0-9]+: [0-9]+ passed, [0-9]+ failed$' "$log"

    summary=$(grep -E "^$name: [0-9]+ passed, [0-9]+ failed\$" "$log" \
              | tail -n 1)

    if [ -z "$summary" ]; then
        echo "FAIL $name: exit $rc and no summary"
        failed=$((failed + 1))
        return
    fi

    echo "$summary"

    read -r p f <<< "$(echo "$summary" \
                       | sed -E 's/^[^:]+: ([0-9]+) passed, ([0-9]+) failed$/\1 \2/')"
    passed=$((passed + p))
    failed=$((failed + f))

    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        echo "FAIL $name: exit $rc with no failed case"
        failed=$((failed + 1))
    fi
}


# sanitizers DIR: san=(flags of AddressSanitizer and UndefinedBehavior-
# Sanitizer) when $cc builds and runs a program with them (in DIR), else ()

sanitizers() {
    san=(-fsanitize=address,undefined -fno-sanitize-recover=all
         -fno-omit-frame-pointer)
    echo 'int main(void) { return 0; }' > "$1/san.c"

    if ! "$cc" "${san[@]}" "$1/san.c" -o "$1/san" 2>/dev/null \
       || ! "$1/san" 2>/dev/null
    then
        san=()
    fi
}


# compiles_cleanly WHAT COMMAND...: a failed COMMAND counts one failure

compiles_cleanly() {
    local what=$1
    shift

    if ! "$@"; then
        echo "FAIL $what does not compile cleanly"
        failed=$((failed + 1))
    fi
}


# build_and_run NAME DIR COMMAND...: "COMMAND -o DIR/NAME" builds a test
# program (a failure counts one), which runs with the assignments of the
# array run_env and is tallied

build_and_run() {
    local name=$1 out=$2 rc
    shift 2

    if ! "$@" -o "$out/$name"; then
        echo "FAIL $name: does not compile"
        failed=$((failed + 1))
        return
    fi

    env "${run_env[@]}" "$out/$name" > "$out/$name.log" 2>&1
    rc=$?

    tally "$name" "$out/$name.log" "$rc"
}
