#!/usr/bin/env bash
# The producer end to end over HTTP against the Python reference path, in one session, through
# the same AWS-like limits proxy (1 MiB/s and 1 000 records/s per shard, 500 entries and 5 MiB
# per PutRecords) in front of the same kinesalite, on streams of the same shape:
#
#   - Python: aws-kinesis-agg 1.2.3 aggregation + boto3 PutRecords, bench/py_producer.py
#   - Rust:   kinesis-producer with its default configuration, and with the KPL's relaxed
#             record order, examples/src/bin/producer-http-bench.rs
#
# Same records for all: 100-byte random payloads, keys drawn uniformly from key-0 .. key-999,
# built before the clock starts; the clock runs from the first record handed over to the last
# one acknowledged. Each shape (shards:records) runs BENCH_RUNS rounds, a round being one run of
# each implementation on a fresh stream (created directly on kinesalite, deleted afterwards);
# the table gives medians.
#
# Starts kinesalite with `cargo xtask up --with-kinesalite` (foreground, stopped at the end;
# it also starts the default kinesis-mock + DynamoDB Local, which stay idle) and the
# `limits-proxy` binary, and stops both on exit. Installs the Python side into bench/.deps/.
# Writes bench/results/producer-vs-python.jsonl and .md and prints the table.
#
#   bench/producer-vs-python.sh
#
# Environment: BENCH_RUNS (default 3), BENCH_SHAPES (default "4:400000 64:1000000").
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/deps.sh"
# Not pinned: kinesalite, the proxy and the client share the machine's cores.
BENCH_PIN=""

RUNS="${BENCH_RUNS:-3}"
SHAPES="${BENCH_SHAPES:-4:400000 64:1000000}"

need cargo
install_python_deps

cd "$REPO_DIR"
log "bench: building producer-http-bench, limits-proxy (release) and xtask"
cargo build --release --quiet -p kinesis-examples --bin producer-http-bench
cargo build --release --quiet -p kinesis-integration-tests --bin limits-proxy
cargo build --quiet -p xtask
TARGET="${CARGO_TARGET_DIR:-$REPO_DIR/target}"

RUN_DIR="$DEPS_DIR/run-$$"
RESULTS_DIR="$BENCH_DIR/results"
mkdir -p "$RUN_DIR" "$RESULTS_DIR"
JSONL="$RESULTS_DIR/producer-vs-python.jsonl"
TABLE="$RESULTS_DIR/producer-vs-python.md"

XTASK_PID="" PROXY_PID=""
stop() {
    if [[ -n "$PROXY_PID" ]]; then kill -TERM "$PROXY_PID" 2>/dev/null || true; fi
    if [[ -n "$XTASK_PID" ]]; then
        kill -INT "$XTASK_PID" 2>/dev/null || true
        wait "$XTASK_PID" 2>/dev/null || true
    fi
}
trap stop EXIT

# wait_for FILE PATTERN PID SECONDS: until a line of FILE matches, while PID lives.
wait_for() {
    local i
    for ((i = 0; i < $4 * 5; i++)); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        kill -0 "$3" 2>/dev/null || { log "bench: $1 has no '$2' and its process ended"; return 1; }
        sleep 0.2
    done
    log "bench: no '$2' in $1 after $4 s"
    return 1
}

# xtask finds the workspace through the path it was built from; a target folder shared with
# another checkout may hold that checkout's xtask, so check, and build a private one if so.
XTASK_BIN="$TARGET/debug/xtask"
if ! grep -aq "$REPO_DIR/xtask" "$XTASK_BIN"; then
    log "bench: $XTASK_BIN was built from another checkout; building xtask into $DEPS_DIR/target"
    CARGO_TARGET_DIR="$DEPS_DIR/target" cargo build --quiet -p xtask
    XTASK_BIN="$DEPS_DIR/target/debug/xtask"
fi
cp "$XTASK_BIN" "$RUN_DIR/xtask"

log "bench: starting kinesalite (cargo xtask up --with-kinesalite; logs in $RUN_DIR)"
setsid "$RUN_DIR/xtask" up --with-kinesalite >"$RUN_DIR/xtask.out" 2>"$RUN_DIR/xtask.err" &
XTASK_PID=$!
wait_for "$RUN_DIR/xtask.out" KTK_KINESALITE_ENDPOINT "$XTASK_PID" 240 || {
    tail -20 "$RUN_DIR/xtask.err" >&2
    exit 1
}
KINESALITE="$(sed -n 's/^export KTK_KINESALITE_ENDPOINT=//p' "$RUN_DIR/xtask.out")"
# kinesalite's PID, from the state file xtask names on stderr, to count its CPU time.
wait_for "$RUN_DIR/xtask.err" 'xtask: state in ' "$XTASK_PID" 30
STATE_FILE="$(sed -n 's/^xtask: state in //p' "$RUN_DIR/xtask.err" | tail -1)"
KINESALITE_PID="$(sed -n 's/^PID_KINESALITE=//p' "$STATE_FILE")"

# cpu_ticks PID: user + system CPU time of a process, in USER_HZ (100/s) ticks.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

"$TARGET/release/limits-proxy" --upstream "$KINESALITE" >"$RUN_DIR/proxy.out" 2>"$RUN_DIR/proxy.err" &
PROXY_PID=$!
wait_for "$RUN_DIR/proxy.out" '127.0.0.1:' "$PROXY_PID" 30
PROXY="http://$(head -1 "$RUN_DIR/proxy.out")"
log "bench: kinesalite at $KINESALITE, limits proxy at $PROXY"

: >"$JSONL"
echo "# $(machine_line)" >>"$JSONL"
for shape in $SHAPES; do
    shards="${shape%%:*}" records="${shape##*:}"
    for ((round = 1; round <= RUNS; round++)); do
        for impl in python rust rust-relaxed; do
            stream="bench-$impl-$shards-$round-$$"
            "$PY" "$BENCH_DIR/py_producer.py" create --endpoint "$KINESALITE" --stream "$stream" \
                --shards "$shards"
            log "bench: $impl, $shards shards, $records records, round $round"
            kinesalite_before="$(cpu_ticks "$KINESALITE_PID")" proxy_before="$(cpu_ticks "$PROXY_PID")"
            case "$impl" in
                python)
                    line="$("$PY" "$BENCH_DIR/py_producer.py" produce --endpoint "$PROXY" \
                        --stream "$stream" --records "$records")" ;;
                rust)
                    line="$("$TARGET/release/producer-http-bench" --endpoint "$PROXY" \
                        --stream "$stream" --records "$records")" ;;
                rust-relaxed)
                    line="$("$TARGET/release/producer-http-bench" --endpoint "$PROXY" \
                        --stream "$stream" --records "$records" --record-order relaxed)" ;;
            esac
            kinesalite_cpu="$(($(cpu_ticks "$KINESALITE_PID") - kinesalite_before))"
            proxy_cpu="$(($(cpu_ticks "$PROXY_PID") - proxy_before))"
            printf '%s\n' "$line" >&2
            # The shape, the variant and the servers' CPU time (from before the driver started
            # to after it ended: setup included) go in front of the driver's own fields.
            printf '{"variant":"%s","shards":%s,"round":%s,"kinesalite_cpu_secs":%s,"proxy_cpu_secs":%s,%s\n' \
                "$impl" "$shards" "$round" "$(awk "BEGIN { print $kinesalite_cpu / 100 }")" \
                "$(awk "BEGIN { print $proxy_cpu / 100 }")" "${line#\{}" >>"$JSONL"
            "$PY" "$BENCH_DIR/py_producer.py" delete --endpoint "$KINESALITE" --stream "$stream"
        done
    done
done

{
    echo "Start: $(sed -n '1s/^# //p' "$JSONL")  "
    echo "End: load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    python3 "$BENCH_DIR/producer_table.py" "$JSONL"
} | tee "$TABLE"
