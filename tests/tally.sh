# tests/tally.sh: sourced by the C unit test runners (tests/unit/run.sh,
# tests/unit-policy/run.sh).  Each test program prints lines of its own
# and ends with "NAME: N passed, N failed"; tally NAME LOG RC shows its
# output and adds its counts to $passed and $failed (a missing summary,
# or a non-zero exit with no failed case, counts as one failure).

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
