#!/usr/bin/env bash
# fuzz/run.sh — run every atheris harness for a bounded time.
#
#   fuzz/run.sh [SECONDS]      seconds per harness (default 60); `fuzz/run.sh 20` is the CI smoke run
#
# New interesting inputs go to $FUZZ_WORKDIR/<harness>/corpus (default fuzz/.work), never into the
# checked-in seed corpus; crashes go to $FUZZ_WORKDIR/<harness>/crash-*. Exit status is non-zero if
# any harness found a crash. Extra libFuzzer flags can be passed in $FUZZ_FLAGS (e.g. "-jobs=2").
set -euo pipefail

budget="${1:-60}"
if ! [[ "$budget" =~ ^[0-9]+$ ]] || [ "$budget" -eq 0 ]; then
    echo "usage: $0 [SECONDS]   (a positive whole number of seconds per harness)" >&2
    exit 64
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
workdir="${FUZZ_WORKDIR:-$here/.work}"
python="${PYTHON:-python}"
status=0

for harness in replies session; do
    dir="$workdir/$harness"
    mkdir -p "$dir/corpus"
    echo "== fuzz_$harness: ${budget}s =="
    # The first corpus directory receives new inputs; the seeds are only read.
    rc=0
    # shellcheck disable=SC2086
    "$python" "$here/fuzz_$harness.py" \
        "$dir/corpus" "$here/corpus/$harness" \
        -dict="$here/smtp.dict" \
        -max_total_time="$budget" \
        -max_len=8192 \
        -timeout=10 \
        -rss_limit_mb=2048 \
        -print_final_stats=1 \
        -artifact_prefix="$dir/" \
        ${FUZZ_FLAGS:-} >"$dir/last-run.log" 2>&1 || rc=$?
    grep -E '^(#[0-9]+.*(INITED|DONE)|Done [0-9]+ runs|stat::number_of_executed_units)' \
        "$dir/last-run.log" || true
    if [ "$rc" -ne 0 ]; then
        echo "fuzz_$harness FAILED (exit $rc): see $dir/last-run.log and $dir/crash-*" >&2
        tail -n 40 "$dir/last-run.log" >&2
        status=1
    fi
done
exit "$status"
