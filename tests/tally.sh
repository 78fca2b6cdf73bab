# tests/tally.sh: sourced by the C unit test runners (tests/unit/run.sh,
# tests/unit-policy/run.sh).  Each test program prints lines of its own
# and ends with "NAME: N passed, N failed"; tally NAME LOG RC shows its
# output and adds its counts to $passed and $failed (a missing summary,
# or a non-zero exit with no failed case, counts as one failure).
# sanitizers OUT sets $san to the flags of the compiler's sanitizers
# ($cc's), or to nothing when it has none that run.

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


# overreads, UB and leaks fail a test when the compiler can find them

sanitizers() {
    local out=$1

    san=(-fsanitize=address,undefined -fno-sanitize-recover=all
         -fno-omit-frame-pointer)
    echo 'int main(void) { return 0; }' > "$out/san.c"

    if ! "$cc" "${san[@]}" "$out/san.c" -o "$out/san" 2>/dev/null \
       || ! "$out/san" 2>/dev/null
    then
        san=()
    fi
}
