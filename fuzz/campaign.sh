#!/usr/bin/env bash
# fuzz/campaign.sh — a long fuzzing campaign, spread over many runs (and sessions).
#
#   fuzz/campaign.sh start [SECONDS] [TARGET[:SECONDS]...]
#                                                 background loop, niced: each target in turn (all
#                                                 by default) for SECONDS (default 600; a target's
#                                                 own :SECONDS wins), until stopped or a finding
#   fuzz/campaign.sh stop                         interrupt the running fuzzer (its executions are
#                                                 still merged and logged) and end the loop
#   fuzz/campaign.sh status                       is a loop running, and what is it fuzzing
#   fuzz/campaign.sh run TARGET SECONDS           one run in the foreground (same merge and log)
#   fuzz/campaign.sh summary                      executions per target, from the log
#   fuzz/campaign.sh targets                      the targets (fuzz/fuzz_<TARGET>.py)
#
# A run fuzzes fuzz_<TARGET>.py from the committed corpus fuzz/corpus/<TARGET>/ into an empty
# scratch directory, then merges: the hand-written seeds (any file whose name is not a SHA-1) are
# always kept, and the other entries are replaced by a libFuzzer -merge=1 minimisation of the old
# entries plus the new inputs, so the corpus only keeps inputs that add coverage. Then it appends
# one line to fuzz/campaign.log:
#
#   <UTC date> target=T execs=N seconds=S exec_per_s=R cov=C ft=F corpus=K (+/-D) findings=X
#   harness=<sha1 prefix of fuzz_T.py> [finding=<path>]
#
# cov and ft are libFuzzer's coverage edges and features at the end of the run. Findings
# (crash-*, timeout-*, oom-*, leak-* inputs) are kept in $FUZZ_WORKDIR/campaign/findings/ and
# stop the loop. Scratch and state live in $FUZZ_WORKDIR/campaign (default fuzz/.work, not
# committed); the corpus and the log are the artefacts to commit.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
state="${FUZZ_WORKDIR:-$here/.work}/campaign"
log="$here/campaign.log"
python="${PYTHON:-python}"

usage() {
    sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 64
}

targets() {
    local f
    for f in "$here"/fuzz_*.py; do
        f="${f##*/fuzz_}"
        echo "${f%.py}"
    done
}

check_target() {
    [ -f "$here/fuzz_$1.py" ] || { echo "no such target: $1 (targets: $(targets | xargs))" >&2; exit 64; }
}

check_seconds() {
    [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -gt 0 ] || { echo "not a positive number of seconds: $1" >&2; exit 64; }
}

# The fuzzer's pid while one runs (empty otherwise); checked against /proc so a stale file never
# names an unrelated process.
alive() {
    local pid
    pid="$(cat "$1" 2>/dev/null || true)"
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$2" &&
        echo "$pid"
    return 0
}

dict_for() {
    if [ -f "$here/$1.dict" ]; then echo "$here/$1.dict"; else echo "$here/smtp.dict"; fi
}

is_hash_name() { [[ "${1##*/}" =~ ^[0-9a-f]{40}$ ]]; }

corpus_size() { find "$1" -maxdepth 1 -type f | wc -l; }

# Replace the corpus' SHA-1-named entries by a minimised merge of them and the new inputs.
merge_corpus() {
    local target="$1" new="$2" corpus="$here/corpus/$1" merged="$state/$1/merged" f
    rm -rf "$merged"
    mkdir -p "$merged" "$corpus"
    for f in "$corpus"/*; do
        [ -f "$f" ] && ! is_hash_name "$f" && cp "$f" "$merged/"
    done
    if ! "$python" "$here/fuzz_$target.py" -merge=1 -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
        "$merged" "$corpus" "$new" >"$state/$target/merge.log" 2>&1 ||
        ! grep -q '^MERGE-OUTER: successful' "$state/$target/merge.log"; then
        echo "merge failed for $target: see $state/$target/merge.log (corpus left as it was)" >&2
        return 1
    fi
    for f in "$corpus"/*; do
        is_hash_name "$f" && rm -f "$f"
    done
    for f in "$merged"/*; do
        is_hash_name "$f" && cp "$f" "$corpus/"
    done
    rm -rf "$merged"
}

# One run of one target: fuzz, merge, log. Returns 3 when the run found something.
run_one() {
    local target="$1" seconds="$2" dir="$state/$1" rc=0 started elapsed before after
    local execs last cov ft rate findings found sha
    mkdir -p "$dir" "$state/findings"
    rm -rf "$dir/new"
    mkdir -p "$dir/new"
    before="$(corpus_size "$here/corpus/$target")"
    sha="$(sha1sum "$here/fuzz_$target.py" | cut -c1-8)"
    touch "$dir/started"
    started="$(date +%s)"
    "$python" "$here/fuzz_$target.py" "$dir/new" "$here/corpus/$target" \
        -dict="$(dict_for "$target")" \
        -max_total_time="$seconds" \
        -max_len=8192 \
        -timeout=10 \
        -rss_limit_mb=2048 \
        -print_final_stats=1 \
        -artifact_prefix="$state/findings/$target-" \
        >"$dir/run.log" 2>&1 &
    echo $! >"$state/fuzzer.pid"
    echo "$target" >"$state/fuzzer.target"
    wait $! || rc=$?
    rm -f "$state/fuzzer.pid" "$state/fuzzer.target"
    elapsed=$(($(date +%s) - started))
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/run.log" | tail -n 1)"
    last="$(grep -E '^#[0-9]+' "$dir/run.log" | tail -n 1 || true)"
    if [ -z "$execs" ]; then # killed without its final stats: the last status line
        execs="$(sed -E 's/^#([0-9]+).*/\1/' <<<"$last")"
    fi
    execs="${execs:-0}"
    cov="$(sed -nE 's/.* cov: ([0-9]+).*/\1/p' <<<"$last")"
    ft="$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")"
    rate=$((execs / (elapsed > 0 ? elapsed : 1)))
    found="$(find "$state/findings" -maxdepth 1 -type f -name "$target-*" -newer "$dir/started" | head -n 1)"
    findings="$(find "$state/findings" -maxdepth 1 -type f -name "$target-*" -newer "$dir/started" | wc -l)"
    if [ "$findings" -eq 0 ]; then
        merge_corpus "$target" "$dir/new" || true
    fi
    after="$(corpus_size "$here/corpus/$target")"
    [ -s "$log" ] || echo "# fuzz/campaign.sh: one line per run (fuzz/campaign.sh summary totals it)" >"$log"
    printf '%s target=%s execs=%s seconds=%s exec_per_s=%s cov=%s ft=%s corpus=%s (%+d) findings=%s harness=%s%s\n' \
        "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$target" "$execs" "$elapsed" "$rate" "${cov:-?}" "${ft:-?}" \
        "$after" $((after - before)) "$findings" "$sha" "${found:+ finding=$found}" >>"$log"
    tail -n 1 "$log"
    rm -rf "$dir/new"
    if [ "$findings" -gt 0 ]; then
        echo "FINDING in $target: $found (replay: $python $here/fuzz_$target.py $found)" >&2
        tail -n 40 "$dir/run.log" >&2
        return 3
    fi
    if [ "$rc" -ne 0 ] && [ ! -e "$state/stop" ]; then
        echo "fuzz_$target exited with $rc: see $dir/run.log" >&2
        return 1
    fi
}

loop() {
    local seconds="$1" target
    shift
    while [ ! -e "$state/stop" ]; do
        # Targets are listed again each round, so a new harness joins a running campaign.
        for target in $([ $# -gt 0 ] && printf '%s\n' "$@" || targets); do
            [ -e "$state/stop" ] && break
            local name="${target%%:*}" time="$seconds"
            [ "$name" != "$target" ] && time="${target#*:}"
            run_one "$name" "$time" || { echo "campaign stopped ($(date -u))"; return 0; }
        done
    done
    echo "campaign stopped ($(date -u))"
}

# The script's work, in one function called from its last line: bash reads a script as it runs
# it, so editing this file while a campaign loop runs could otherwise make that loop read the
# new text from an old offset once its loop ends.
main() {
    cmd="${1:-}"
    [ $# -gt 0 ] && shift
    case "$cmd" in
    start)
        seconds="${1:-600}"
        check_seconds "$seconds"
        [ $# -gt 0 ] && shift
        for t in "$@"; do
            check_target "${t%%:*}"
            [ "${t%%:*}" = "$t" ] || check_seconds "${t#*:}"
        done
        mkdir -p "$state"
        if [ -n "$(alive "$state/loop.pid" campaign.sh)" ]; then
            echo "a campaign is already running (pid $(cat "$state/loop.pid"))" >&2
            exit 1
        fi
        rm -f "$state/stop"
        nohup nice -n 19 bash "${BASH_SOURCE[0]}" _loop "$seconds" "$@" >>"$state/loop.log" 2>&1 &
        echo $! >"$state/loop.pid"
        echo "campaign started: pid $!, ${seconds}s per run, log $log, output $state/loop.log"
        ;;
    _loop)
        loop "$@"
        ;;
    stop)
        loop_pid="$(alive "$state/loop.pid" campaign.sh)"
        if [ -z "$loop_pid" ]; then
            echo "no campaign is running"
            exit 0
        fi
        touch "$state/stop"
        # Interrupt the fuzzer (SIGTERM: libFuzzer prints its final stats), let the loop merge and
        # log that run, and wait for the loop to end. Repeated, in case a run was just starting.
        for _ in $(seq 600); do
            [ -z "$(alive "$state/loop.pid" campaign.sh)" ] && break
            fuzzer="$(alive "$state/fuzzer.pid" fuzz_)"
            [ -n "$fuzzer" ] && kill -TERM "$fuzzer" 2>/dev/null || true
            sleep 1
        done
        if [ -n "$(alive "$state/loop.pid" campaign.sh)" ]; then
            echo "the campaign loop (pid $loop_pid) did not stop" >&2
            exit 1
        fi
        rm -f "$state/loop.pid" "$state/stop"
        echo "campaign stopped"
        tail -n 1 "$log"
        ;;
    status)
        loop_pid="$(alive "$state/loop.pid" campaign.sh)"
        if [ -z "$loop_pid" ]; then
            echo "no campaign is running"
        else
            fuzzer="$(alive "$state/fuzzer.pid" fuzz_)"
            echo "campaign running: loop pid $loop_pid, fuzzer pid ${fuzzer:-none}" \
                "($(cat "$state/fuzzer.target" 2>/dev/null || echo merging))"
            grep -E '^#[0-9]+' "$state/$(cat "$state/fuzzer.target" 2>/dev/null)/run.log" 2>/dev/null |
                tail -n 1 || true
        fi
        ;;
    run)
        [ $# -eq 2 ] || usage
        check_target "$1"
        check_seconds "$2"
        mkdir -p "$state"
        run_one "$1" "$2"
        ;;
    summary)
        [ -f "$log" ] || { echo "no log yet ($log)"; exit 0; }
        awk '
            /^#/ || NF == 0 { next }
            {
                for (i = 2; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
                t = f["target"]; runs[t]++; execs[t] += f["execs"]; secs[t] += f["seconds"]
                finds[t] += f["findings"]; total += f["execs"]; order[t] = 1
            }
            END {
                printf "%-12s %6s %14s %10s %8s %8s\n", "target", "runs", "executions", "seconds", "exec/s", "findings"
                for (t in order)
                    printf "%-12s %6d %14d %10d %8d %8d\n", t, runs[t], execs[t], secs[t], \
                        secs[t] ? execs[t] / secs[t] : 0, finds[t]
                printf "%-12s %6s %14d\n", "total", "", total
            }' "$log"
        ;;
    targets)
        targets
        ;;
    *)
        usage
        ;;
    esac
}

main "$@"
exit
