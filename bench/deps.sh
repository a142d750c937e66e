# Sourced by the bench scripts: paths, and the reference libraries installed into the
# ignored folder bench/.deps/ (delete it to start over). Needs python3 with venv (or uv),
# node and npm; registries: PyPI and npm.

BENCH_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$BENCH_DIR/.." && pwd)"
DEPS_DIR="$BENCH_DIR/.deps"
PY="$DEPS_DIR/py/bin/python"
NODE_MODULES="$DEPS_DIR/node/node_modules"
# The codec drivers run pinned to one CPU at raised priority, as the criterion figures in
# BENCHMARKS.md were taken (one core each is the comparison; the machine may be shared, and
# without root `nice` only warns). BENCH_PIN="" runs them as they are.
if [[ -z "${BENCH_PIN+set}" ]]; then
    BENCH_PIN=""
    if command -v taskset >/dev/null && [[ "$(nproc)" -ge 2 ]]; then
        BENCH_PIN="taskset -c 1"
        if [[ "$(id -u)" == 0 ]]; then BENCH_PIN="nice -n -10 $BENCH_PIN"; fi
    fi
fi

log() { printf '%s\n' "$*" >&2; }

need() {
    command -v "$1" >/dev/null || { log "bench: $1 is needed on PATH"; exit 1; }
}

install_python_deps() {
    local marker="$DEPS_DIR/py/.installed"
    if [[ -f "$marker" ]] && cmp -s "$BENCH_DIR/requirements.txt" "$marker"; then
        return
    fi
    need python3
    log "bench: installing the Python reference into $DEPS_DIR/py"
    rm -rf "$DEPS_DIR/py"
    mkdir -p "$DEPS_DIR"
    if command -v uv >/dev/null; then
        uv venv --quiet --python python3 "$DEPS_DIR/py"
        uv pip install --quiet --python "$PY" -r "$BENCH_DIR/requirements.txt"
    else
        python3 -m venv "$DEPS_DIR/py"
        "$PY" -m pip install --quiet -r "$BENCH_DIR/requirements.txt"
    fi
    cp "$BENCH_DIR/requirements.txt" "$marker"
}

install_node_deps() {
    local marker="$DEPS_DIR/node/.installed"
    [[ -f "$marker" ]] && return
    need node
    need npm
    log "bench: installing the Node reference into $DEPS_DIR/node"
    rm -rf "$DEPS_DIR/node"
    mkdir -p "$DEPS_DIR/node"
    npm install --silent --prefix "$DEPS_DIR/node" --save-exact --no-audit --no-fund \
        aws-kinesis-agg@4.2.8 >&2
    touch "$marker"
}

# Prints the machine line the results are recorded with.
machine_line() {
    local cpu
    cpu="$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')"
    printf 'nproc=%s, CPU "%s", %s, %s, node %s, %s, pinned: "%s", load average %s, %s\n' \
        "$(nproc)" "$cpu" "$(rustc --version)" "$("$PY" --version 2>&1)" "$(node --version)" \
        "$(uname -sr)" "${BENCH_PIN:-none}" "$(cut -d" " -f1-3 /proc/loadavg)" "$(date -u '+%Y-%m-%d %H:%M UTC')"
}
