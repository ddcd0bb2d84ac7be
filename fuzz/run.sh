#!/usr/bin/env bash
# fuzz/run.sh — run every atheris harness within a bounded time.
#
#   fuzz/run.sh [SECONDS [TARGET...]]   SECONDS in all (default 60), shared equally by the targets
#                                       (default: every fuzz/fuzz_<TARGET>.py); `fuzz/run.sh 20`
#                                       is the CI smoke run
#
# Each harness first replays its whole committed corpus (fuzz/corpus/<TARGET>/), then fuzzes.
# New interesting inputs go to $FUZZ_WORKDIR/<harness>/corpus (default fuzz/.work), never into the
# checked-in corpus (fuzz/campaign.sh merges them); crashes go to $FUZZ_WORKDIR/<harness>/crash-*.
# Exit status is non-zero if any harness found a crash. Extra libFuzzer flags can be passed in
# $FUZZ_FLAGS (e.g. "-jobs=2 -workers=2").
set -euo pipefail

budget="${1:-60}"
if ! [[ "$budget" =~ ^[0-9]+$ ]] || [ "$budget" -eq 0 ]; then
    echo "usage: $0 [SECONDS [TARGET...]]   (a positive whole number of seconds in all)" >&2
    exit 64
fi
[ $# -gt 0 ] && shift

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
workdir="${FUZZ_WORKDIR:-$here/.work}"
python="${PYTHON:-python}"
status=0

if [ $# -gt 0 ]; then
    harnesses=("$@")
else
    harnesses=()
    for f in "$here"/fuzz_*.py; do
        f="${f##*/fuzz_}"
        harnesses+=("${f%.py}")
    done
fi
each=$((budget / ${#harnesses[@]}))
[ "$each" -gt 0 ] || each=1

for harness in "${harnesses[@]}"; do
    if [ ! -f "$here/fuzz_$harness.py" ]; then
        echo "no such harness: $here/fuzz_$harness.py" >&2
        exit 64
    fi
    dir="$workdir/$harness"
    mkdir -p "$dir/corpus"
    dict="$here/$harness.dict"
    [ -f "$dict" ] || dict="$here/smtp.dict"
    echo "== fuzz_$harness: ${each}s =="
    # The first corpus directory receives new inputs; the seeds are only read.
    rc=0
    # shellcheck disable=SC2086
    "$python" "$here/fuzz_$harness.py" \
        "$dir/corpus" "$here/corpus/$harness" \
        -dict="$dict" \
        -max_total_time="$each" \
        -max_len=8192 \
        -timeout=10 \
        -rss_limit_mb=2048 \
        -print_final_stats=1 \
        -artifact_prefix="$dir/" \
        ${FUZZ_FLAGS:-} >"$dir/last-run.log" 2>&1 || rc=$?
    grep -E '^(#[0-9]+.*(INITED|DONE)|Done [0-9]+ runs|stat::(number_of_executed_units|average_exec_per_sec))' \
        "$dir/last-run.log" || true
    if [ "$rc" -ne 0 ]; then
        echo "fuzz_$harness FAILED (exit $rc): see $dir/last-run.log and $dir/crash-*" >&2
        tail -n 40 "$dir/last-run.log" >&2
        status=1
    fi
done
exit "$status"
