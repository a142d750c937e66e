#!/usr/bin/env bash
# The KPL aggregation codec against the awslabs reference libraries, in one session on the
# same workload files:
#
#   - Python aws-kinesis-agg 1.2.3 (+ six, which it imports without declaring), bench/py_agg.py
#   - Node aws-kinesis-agg 4.2.8, bench/node_agg.js
#   - this workspace's kinesis_common::aggregation, examples/src/bin/codec-bench.rs, twice:
#     as the producer and the consumer use it (a PutRecords request's aggregates sealed
#     together, a GetRecords page's de-aggregated together: several MD5 digests at once) and
#     with --one-by-one (each aggregate finished and de-aggregated alone)
#   - raw MD5 (md-5 0.11, in codec-bench) over the same aggregates: the floor
#
# For 100 B, 1 KiB and 10 KiB records (~50 MB of user data each, a distinct 36-character key
# per record), each driver aggregates every record into aggregates of at most 1 MiB (the
# references' default; Node has no other setting) and then of at most 51 200 bytes (the KPL's
# default; Python and Rust only) and de-aggregates them back. A driver process loads the
# workload, does one untimed warm-up run and one timed run; BENCH_RUNS rounds run every
# driver on every workload in turn, and the table gives the medians over the rounds (and each
# round's ratios). The 1 MiB aggregates of each driver are then de-aggregated by the other two
# and compared with the workload, record by record.
#
# Installs what it needs into bench/.deps/ (ignored). Writes bench/results/codec-vs-reference.jsonl
# (the drivers' JSON lines) and .md (the tables), and prints the tables.
#
#   bench/codec-vs-reference.sh
#
# Every driver allocates its aggregates through glibc's malloc (Python's bytes beyond 512
# bytes, Node's Buffers, Rust's Vec). By default glibc gives large freed blocks back to the
# kernel (1 MiB aggregates are mapped and unmapped one by one, and the top of the heap is
# trimmed), so a timed run would fault in and zero every page of its output again: that is
# the kernel's time, not the codec's, and it weighs most on the fastest driver. Every driver
# therefore runs with glibc told to keep freed memory (GLIBC_TUNABLES below: blocks up to
# 32 MiB from the heap, no trimming), which is how a long-running producer's heap behaves once
# warm. BENCH_MALLOC=default runs them with glibc's defaults instead.
#
# Environment: BENCH_RUNS (default 3), BENCH_MAX_SIZES (default "1048576 51200"),
# BENCH_WORKLOADS (default "100:500000 1024:50000 10240:5000", record size:count),
# BENCH_PIN (default "nice -n -10 taskset -c 1": raised priority on one CPU; empty: neither),
# BENCH_MALLOC (default "keep"; "default": glibc's own settings).
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/deps.sh"

RUNS="${BENCH_RUNS:-3}"
MAX_SIZES="${BENCH_MAX_SIZES:-1048576 51200}"
# record size:count, ~50 MB of user data each.
WORKLOADS="${BENCH_WORKLOADS:-100:500000 1024:50000 10240:5000}"

need cargo
install_python_deps
install_node_deps

cd "$REPO_DIR"
log "bench: building codec-bench (release)"
cargo build --release --quiet -p kinesis-examples --bin codec-bench
RUST_BIN="${CARGO_TARGET_DIR:-$REPO_DIR/target}/release/codec-bench"

WORK="$DEPS_DIR/work"
RESULTS_DIR="$BENCH_DIR/results"
mkdir -p "$WORK" "$RESULTS_DIR"
JSONL="$RESULTS_DIR/codec-vs-reference.jsonl"
TABLE="$RESULTS_DIR/codec-vs-reference.md"
: >"$JSONL"

workload() { echo "$WORK/${1}x${2}.bin"; }

for spec in $WORKLOADS; do
    size="${spec%%:*}" count="${spec##*:}"
    file="$(workload "$size" "$count")"
    if [[ ! -f "$file" ]]; then
        log "bench: generating $file"
        "$PY" "$BENCH_DIR/gen_workload.py" --size "$size" --count "$count" --out "$file"
    fi
done

export NODE_PATH="$NODE_MODULES"
MALLOC="${BENCH_MALLOC:-keep}"
case "$MALLOC" in
    keep) export GLIBC_TUNABLES="glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967296" ;;
    default) ;;
    *) echo "BENCH_MALLOC must be keep or default, not $MALLOC" >&2; exit 2 ;;
esac
echo "# $(machine_line); malloc: $MALLOC${GLIBC_TUNABLES:+ ($GLIBC_TUNABLES)}" >>"$JSONL"

# run_driver ROUND COMMAND...: one driver process (one untimed warm-up run, one timed run);
# its JSON line goes to the results with the round in front.
run_driver() {
    local round="$1" line
    shift
    line="$($BENCH_PIN "$@")"
    printf '%s\n' "$line" >&2
    printf '{"round":%s,%s\n' "$round" "${line#\{}" >>"$JSONL"
}

# Rounds interleave the implementations, so that the load of a shared machine falls on all
# of them alike; each round runs every implementation once on every workload.
for max in $MAX_SIZES; do
    for ((round = 1; round <= RUNS; round++)); do
        for spec in $WORKLOADS; do
            size="${spec%%:*}" count="${spec##*:}"
            file="$(workload "$size" "$count")"
            log "bench: round $round, ${size} B records, aggregates <= $max bytes"
            keep=()
            if [[ "$max" == 1048576 && "$round" == 1 ]]; then
                keep=(--write-aggregates "$WORK/python-$size.kba")
            fi
            run_driver "$round" "$PY" "$BENCH_DIR/py_agg.py" run --workload "$file" \
                --max-size "$max" --runs 1 "${keep[@]}"
            if [[ "$max" == 1048576 ]]; then
                if [[ "$round" == 1 ]]; then keep=(--write-aggregates "$WORK/node-$size.kba"); fi
                run_driver "$round" node "$BENCH_DIR/node_agg.js" run --workload "$file" --runs 1 \
                    "${keep[@]}"
                if [[ "$round" == 1 ]]; then keep=(--write-aggregates "$WORK/rust-$size.kba"); fi
            fi
            run_driver "$round" "$RUST_BIN" run --workload "$file" --max-size "$max" --runs 1 \
                "${keep[@]}"
            run_driver "$round" "$RUST_BIN" run --workload "$file" --max-size "$max" --runs 1 \
                --one-by-one
        done
    done
done

# Every implementation reads what the other two wrote.
if [[ " $MAX_SIZES " == *" 1048576 "* ]]; then
    log "bench: cross-checking the 1 MiB aggregates"
    for spec in $WORKLOADS; do
        size="${spec%%:*}" count="${spec##*:}"
        file="$(workload "$size" "$count")"
        for writer in python node rust; do
            aggregates="$WORK/$writer-$size.kba"
            if [[ "$writer" != rust ]]; then
                "$RUST_BIN" verify --workload "$file" --aggregates "$aggregates" >&2
            fi
            if [[ "$writer" != python ]]; then
                "$PY" "$BENCH_DIR/py_agg.py" verify --workload "$file" --aggregates "$aggregates" >&2
            fi
            if [[ "$writer" != node ]]; then
                node "$BENCH_DIR/node_agg.js" verify --workload "$file" --aggregates "$aggregates" >&2
            fi
        done
    done
    echo "# cross-check: every 1 MiB aggregate file was read back record by record by the other two implementations" >>"$JSONL"
fi

{
    echo "Start: $(sed -n '1s/^# //p' "$JSONL")  "
    echo "End: load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    python3 "$BENCH_DIR/codec_table.py" "$JSONL"
} | tee "$TABLE"
