#!/usr/bin/env bash
# Measures the cost of "any node answers any job" on a three-node loopback
# cluster: poll latency on the owner vs a non-owner, and the latency a
# non-owner adds to WebSocket events (examples/cluster_latency.rs).
#
# Builds the release binary and the example, starts node-a (seed, no
# workers), node-b and node-c (one worker each, joining through a) on free
# loopback ports with their own temporary data directories, waits until each
# node sees 3 members up, runs the example, then stops the nodes and removes
# the temporary directory (also on failure or Ctrl-C).
#
#   scripts/bench-cluster.sh [--polls N] [--out FILE]
#
# Extra arguments go to the example. Results: a plain-text report on stdout
# and target/bench/cluster.json. Node logs are printed if something fails.
# Time bounds: BUILD_TIMEOUT (default 1800 s, a cargo lock wait included),
# 60 s for the cluster to form, RUN_TIMEOUT (default 600 s) for the example.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

BUILD_TIMEOUT=${BUILD_TIMEOUT:-1800}
RUN_TIMEOUT=${RUN_TIMEOUT:-600}
COOKIE=${COOKIE:-bench-cluster-cookie-$$}

command -v ffmpeg >/dev/null || { echo "the ffmpeg CLI is needed (scripts/deps.sh installs it)" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }

echo "== building (release) =="
timeout "$BUILD_TIMEOUT" cargo build --release --bin vidpress --example cluster_latency
target_dir=$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin=$target_dir/release/vidpress
example=$target_dir/release/examples/cluster_latency

tmp=$(mktemp -d -t vidpress-bench-XXXXXX)
pids=()
ok=0
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill -CONT "$pid" 2>/dev/null || true
        kill -TERM "$pid" 2>/dev/null || true
    done
    # A draining node waits for its jobs; give it a moment, then SIGKILL.
    for _ in $(seq 30); do
        local alive=0
        for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for pid in "${pids[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "$ok" != 1 ]; then
        for log in "$tmp"/*.log; do
            [ -f "$log" ] || continue
            echo "--- $(basename "$log") (last 40 lines) ---" >&2
            tail -n 40 "$log" >&2
        done
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free loopback port: bound by the kernel, then released.
used_ports=" "
free_port() {
    local port
    while :; do
        port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null) \
            || port=$((20000 + RANDOM % 40000))
        case "$used_ports" in *" $port "*) continue ;; esac
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            used_ports="$used_ports$port "
            echo "$port"
            return
        fi
    done
}

declare -A http cluster
for n in a b c; do
    http[$n]=$(free_port)
    cluster[$n]=$(free_port)
done

start_node() { # name workers [seed-port]
    local name=$1 workers=$2 seed=${3:-}
    local args=(serve --node-name "node-$name" --cookie "$COOKIE"
        --http "127.0.0.1:${http[$name]}" --cluster-listen "127.0.0.1:${cluster[$name]}"
        --workers "$workers" --heartbeat-ms 200 --failure-timeout-ms 1500
        --data-dir "$tmp/data-$name")
    [ -n "$seed" ] && args+=(--seeds "127.0.0.1:$seed")
    RUST_LOG=${RUST_LOG:-warn} "$bin" "${args[@]}" >/dev/null 2>"$tmp/node-$name.log" &
    pids+=($!)
}

echo "== starting node-a (seed, 0 workers), node-b and node-c (1 worker each) =="
start_node a 0
start_node b 1 "${cluster[a]}"
start_node c 1 "${cluster[a]}"

deadline=$((SECONDS + 60))
for n in a b c; do
    while :; do
        up=$(curl -fsS --max-time 2 "http://127.0.0.1:${http[$n]}/cluster" 2>/dev/null | grep -o '"state":"up"' | wc -l || true)
        [ "${up:-0}" -ge 3 ] && break
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "node-$n never saw 3 nodes up" >&2
            exit 1
        fi
        for pid in "${pids[@]}"; do
            kill -0 "$pid" 2>/dev/null || { echo "a node exited during start-up" >&2; exit 1; }
        done
        sleep 0.2
    done
    echo "node-$n sees 3 up (http ${http[$n]}, cluster ${cluster[$n]})"
done

echo "== commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(git status --porcelain 2>/dev/null | wc -l) changed files in the work tree =="
echo "== load before the run: $(cut -d' ' -f1-3 /proc/loadavg) (nproc $(nproc)) =="
timeout "$RUN_TIMEOUT" "$example" \
    "http://127.0.0.1:${http[a]}" "http://127.0.0.1:${http[b]}" "http://127.0.0.1:${http[c]}" \
    --out "$root/target/bench/cluster.json" "$@"
ok=1
