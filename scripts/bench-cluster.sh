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
#
#   scripts/bench-cluster.sh --split
#
# Segment-parallel encoding (issue 16): one long video on one node, then
# on two (and three where `nproc` >= 3), each node pinned to a core of its
# own (`taskset -c 0`, `-c 1`, `-c 2`) with one worker. The input, 150 s of
# 1280x720 at 30 fps (testsrc2 with noise, a sine tone), is made once and
# cached under target/bench/. Each cluster gets the input on node-1 with
# the default options (crf) and is timed from the upload to `completed`;
# the one-node cluster also runs it with `parallel=off`, the single pass
# whose size the split result is held to. Reports the wall time per
# cluster size, the speed-up (one node's time over n nodes'), the
# efficiency (speed-up / n), the size penalty (split size / single-pass
# size - 1), and the plan and join phases as shares of the whole, as the
# status document shows them (polled every 250 ms) and as the owner logs
# them, against the targets (>= 1.7x on two nodes, >= 2.4x on three, size
# within +3 %). Plain text on stdout, and target/bench/split.json.
# Nodes take the default --segment-secs and --segment-min-secs unless
# SEGMENT_SECS or SEGMENT_MIN_SECS are set; SPLIT_INPUT=FILE runs another
# input (a quick check of the script on a short clip); REPEATS=N (default
# 1) runs each job N times on its cluster and reports the median; JOB_TIMEOUT
# (default 1800 s) bounds each job, 60 s each cluster's forming. As a
# reference for the machine itself, the ffmpeg CLI encodes 30 s of the input
# alone on core 0, then as n copies at once on cores 0..n-1: n times the
# first time over the mean of the others is the most n one-core nodes can
# gain on this machine (shared caches, memory, a hypervisor's other guests).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

mode=cluster
if [ "${1:-}" = "--split" ]; then
    mode=split
    shift
fi

BUILD_TIMEOUT=${BUILD_TIMEOUT:-1800}
RUN_TIMEOUT=${RUN_TIMEOUT:-600}
COOKIE=${COOKIE:-bench-cluster-cookie-$$}

command -v ffmpeg >/dev/null || { echo "the ffmpeg CLI is needed (scripts/deps.sh installs it)" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl is needed" >&2; exit 1; }

echo "== building (release) =="
if [ "$mode" = split ]; then
    timeout "$BUILD_TIMEOUT" cargo build --release --bin vidpress
else
    timeout "$BUILD_TIMEOUT" cargo build --release --bin vidpress --example cluster_latency
fi
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

# --- --split: segment-parallel encoding on nodes pinned to a core each ---

JOB_TIMEOUT=${JOB_TIMEOUT:-1800}

# The 150 s 720p input, made once: testsrc2 with light temporal noise (so
# every frame costs the encoder something; about 2.8 Mbit/s, 53 MB) and a
# sine tone.
split_input() {
    if [ -n "${SPLIT_INPUT:-}" ]; then
        echo "$SPLIT_INPUT"
        return
    fi
    local input=$root/target/bench/split-input-1280x720-30fps-150s-noise4.mp4
    mkdir -p "$root/target/bench"
    if [ ! -s "$input" ]; then
        echo "== making $input (once) ==" >&2
        timeout 1800 ffmpeg -hide_banner -loglevel error -y \
            -f lavfi -i "testsrc2=size=1280x720:rate=30,noise=alls=4:allf=t" \
            -f lavfi -i "sine=frequency=440:sample_rate=48000" -t 150 \
            -c:v libx264 -preset veryfast -crf 23 -pix_fmt yuv420p \
            -c:a aac -b:a 128k -movflags +faststart "$input.tmp.mp4"
        mv "$input.tmp.mp4" "$input"
    fi
    echo "$input"
}

# The helper that submits a job, follows it and reads the logs (python3).
write_split_helper() {
    cat >"$tmp/split_bench.py" <<'PY'
"""Submits and follows one job (job), reads node logs (logs), reports (report)."""
import datetime
import http.client
import json
import os
import re
import sys
import time
import urllib.parse


def get(base, path, timeout=5):
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        conn.close()


def job(base, input_path, query, limit, out):
    url = urllib.parse.urlsplit(base)
    size = os.path.getsize(input_path)
    t0 = time.monotonic()
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=600)
    with open(input_path, "rb") as body:
        conn.request("POST", "/jobs" + query, body=body,
                     headers={"content-length": str(size)})
        response = conn.getresponse()
        accepted = json.loads(response.read())
    conn.close()
    if response.status != 202:
        sys.exit(f"POST /jobs{query}: {response.status} {accepted}")
    t_accepted = time.monotonic() - t0
    job_id = accepted["id"]
    seen = {"planned": None, "first_running": None, "segments_done": None}
    running_since, segment_nodes, max_running = {}, {}, 0
    polls, doc = [], None
    while True:
        now = time.monotonic() - t0
        if now > limit:
            sys.exit(f"job {job_id} did not end within {limit} s: {doc}")
        try:
            _, doc = get(base, f"/jobs/{job_id}")
        except (OSError, ValueError):
            time.sleep(0.25)
            continue
        now = time.monotonic() - t0
        segments = doc.get("segments") or []
        if segments and seen["planned"] is None:
            seen["planned"] = now
        running = [s for s in segments if s.get("state") == "running"]
        max_running = max(max_running, len(running))
        if running and seen["first_running"] is None:
            seen["first_running"] = now
        for s in running:
            running_since.setdefault(s["index"], now)
        for s in segments:
            if s.get("node"):
                segment_nodes[s["index"]] = s["node"]
        if segments and all(s.get("state") == "done" for s in segments) \
                and seen["segments_done"] is None:
            seen["segments_done"] = now
        polls.append([round(now, 3), doc.get("status"), doc.get("progress")])
        if doc.get("status") in ("completed", "failed", "canceled"):
            break
        time.sleep(0.25)
    total = time.monotonic() - t0
    result = doc.get("result") or {}
    summary = {
        "id": job_id, "query": query, "status": doc.get("status"),
        "error": doc.get("error"), "seconds": round(total, 3),
        "accepted_seconds": round(t_accepted, 3),
        "planned_seconds": seen["planned"],
        "first_segment_running_seconds": seen["first_running"],
        "segments_done_seconds": seen["segments_done"],
        "segments": len(doc.get("segments") or []),
        "segment_nodes": segment_nodes, "max_segments_running": max_running,
        "attempt": doc.get("attempt"), "bytes": result.get("bytes"),
        "result": result, "document": doc, "polls": len(polls),
    }
    with open(out, "w") as f:
        json.dump(summary, f, indent=1)
    if doc.get("status") != "completed":
        sys.exit(f"job {job_id} ended {doc.get('status')}: {doc.get('error')}")


def stamp(text):
    text = text.replace("Z", "+00:00")
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    return datetime.datetime.fromisoformat(text).timestamp()


def logs(job_id, out, *paths):
    """Every JSON log line about the job, on every node, in time order."""
    lines = []
    for path in paths:
        node = os.path.basename(path).removesuffix(".log")
        with open(path, errors="replace") as f:
            for raw in f:
                try:
                    line = json.loads(raw)
                except ValueError:
                    continue
                span = line.get("span") or {}
                ids = {line.get("job_id"), span.get("job_id")}
                ids |= {s.get("job_id") for s in line.get("spans") or []}
                if job_id not in ids:
                    continue
                fields = {k: v for k, v in line.items()
                          if k not in ("timestamp", "level", "target", "span", "spans",
                                       "message", "job_id")}
                lines.append({"node": node, "t": stamp(line["timestamp"]),
                              "message": str(line.get("message", "")), "fields": fields})
    lines.sort(key=lambda l: l["t"])
    with open(out, "w") as f:
        json.dump(lines, f, indent=1)


def log_phases(lines):
    """The phases of a job by its log lines (seconds; None when a line is
    missing): the probe ("job accepted" to "input probed"), the plan
    ("input probed" to "job split"), the pieces (first "piece dispatched"
    to last "piece done"), the join (the "joined" line's own seconds), and
    the end ("joined" to "job finished": the result stored and copied)."""
    def first(message):
        return next((l["t"] for l in lines if l["message"] == message), None)

    def last(message):
        return next((l["t"] for l in reversed(lines) if l["message"] == message), None)

    def between(a, b):
        return None if a is None or b is None else round(b - a, 3)

    joined = next((l for l in lines if l["message"] == "joined"), None)
    return {
        "probe": between(first("job accepted"), first("input probed")),
        "plan": between(first("input probed"), first("job split")),
        "pieces": between(first("piece dispatched"), last("piece done")),
        "join": joined and round(float(joined["fields"].get("seconds", 0.0)), 3),
        "finish": between(first("joined"), first("job finished")),
        "pieces_lost": sum(1 for l in lines if l["message"] == "piece lost"),
    }


def report(out_path, targets_path, *runs_paths):
    runs = [json.load(open(p)) for p in runs_paths]
    targets = json.load(open(targets_path))
    def median(group):
        """The run of median time (the lower of two middles)."""
        group = sorted(group, key=lambda r: r["seconds"])
        return group[(len(group) - 1) // 2]

    all_seconds = {}
    for r in runs:
        all_seconds.setdefault((r["kind"], r["nodes"]), []).append(r["seconds"])
    split = {n: median([r for r in runs if r["kind"] == "split" and r["nodes"] == n])
             for n in {r["nodes"] for r in runs if r["kind"] == "split"}}
    singles = [r for r in runs if r["kind"] == "single"]
    single = median(singles) if singles else None
    one = split.get(1)
    rows = []
    for n in sorted(split):
        r = split[n]
        row = {"nodes": n, "seconds": r["seconds"],
               "all_seconds": sorted(all_seconds[("split", n)]),
               "accepted_to_completed_seconds": round(r["seconds"] - r["accepted_seconds"], 3),
               "upload_and_accept_seconds": r["accepted_seconds"],
               "segments": r["segments"], "attempts": r["attempt"],
               "segment_nodes": sorted(set(r["segment_nodes"].values())),
               "max_segments_running": r["max_segments_running"], "bytes": r["bytes"]}
        if one:
            row["speedup"] = round(one["seconds"] / r["seconds"], 3)
            row["efficiency"] = round(row["speedup"] / n, 3)
            row["speedup_after_accept"] = round(
                (one["seconds"] - one["accepted_seconds"])
                / (r["seconds"] - r["accepted_seconds"]), 3)
        if single and single.get("bytes") and r.get("bytes"):
            row["size_penalty"] = round(r["bytes"] / single["bytes"] - 1, 5)
        # Phases by the status document: from the 202 to the plan (probe,
        # queue and plan), and from the last segment done to completed
        # (the audio if still running, the join, the copy to the standby).
        plan_phase = join_phase = None
        if r.get("planned_seconds") is not None:
            plan_phase = r["planned_seconds"] - r["accepted_seconds"]
        if r.get("segments_done_seconds") is not None:
            join_phase = r["seconds"] - r["segments_done_seconds"]
        row["plan_phase_seconds_by_status"] = plan_phase and round(plan_phase, 3)
        row["join_phase_seconds_by_status"] = join_phase and round(join_phase, 3)
        total = r["seconds"]
        row["plan_share_by_status"] = plan_phase and round(plan_phase / total, 4)
        row["join_share_by_status"] = join_phase and round(join_phase / total, 4)
        phases = log_phases(r.get("log_lines", []))
        row["log_phases_seconds"] = phases
        plan_log, join_log = phases["plan"], phases["join"]
        row["plan_share_by_log"] = plan_log and round(plan_log / total, 4)
        row["join_share_by_log"] = join_log and round(join_log / total, 4)
        if plan_log is not None and join_log is not None:
            row["split_and_join_share_by_log"] = round((plan_log + join_log) / total, 4)
        row["result_timings"] = (r.get("result") or {}).get("timings")
        # CPU time by node (node and transcoders): independent of what else
        # runs on the machine. The n-node job cannot end before its busiest
        # node's work, so one node's CPU over the busiest node's is the
        # speed-up the work's split allows on idle cores.
        cpu = r.get("cpu_seconds") or []
        row["cpu_seconds_by_node"] = cpu
        row["load_before"], row["load_after"] = r.get("load_before"), r.get("load_after")
        if one and one.get("cpu_seconds") and cpu and max(cpu) > 0:
            row["cpu_speedup_bound"] = round(sum(one["cpu_seconds"]) / max(cpu), 3)
            row["cpu_total_vs_one_node"] = round(sum(cpu) / sum(one["cpu_seconds"]), 3)
        rows.append(row)
    doc = {"targets": targets, "single_pass": single and {
        "seconds": single["seconds"], "bytes": single["bytes"],
        "all_seconds": sorted(all_seconds[("single", 1)]),
        "accepted_seconds": single["accepted_seconds"],
        "cpu_seconds": single.get("cpu_seconds"), "load_before": single.get("load_before")},
        "clusters": rows}
    with open(out_path, "w") as f:
        json.dump(doc, f, indent=1)

    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    print()
    print(f"input: {targets['input']}")
    print(f"segment_secs {targets['segment_secs']}, segment_min_secs "
          f"{targets['segment_min_secs']}, one worker a node, each node on its own core")
    print(f"{targets['repeats']} run(s) of each job; the median run is reported")
    if single:
        print(f"single pass (parallel=off, 1 node): {single['seconds']:.1f} s, "
              f"{single['bytes']} bytes (runs: {doc['single_pass']['all_seconds']})")
    machine = targets["machine"]
    print(f"the machine (ffmpeg CLI, 30 s of the input; medians): alone on core 0 "
          f"{machine['alone_seconds']:.2f} s; " + "; ".join(
              f"{k} at once {v} s (mean of the copies, by run), ceiling "
              f"{machine['ceiling'][k]:.2f}x"
              for k, v in machine["together_seconds"].items()))
    print()
    print(f"{'nodes':>5} {'wall s':>8} {'202->done s':>11} {'speed-up':>8} {'effic.':>7} "
          f"{'size pen.':>9} {'segs':>4} {'plan s (share)':>16} {'join s (share)':>16}")
    for row in rows:
        plan = row["plan_phase_seconds_by_status"]
        join = row["join_phase_seconds_by_status"]
        print(f"{row['nodes']:>5} {row['seconds']:>8.1f} "
              f"{row['accepted_to_completed_seconds']:>11.1f} "
              f"{fmt(row.get('speedup'), '.2f'):>8} {fmt(row.get('efficiency'), '.2f'):>7} "
              f"{fmt(row.get('size_penalty') and row['size_penalty'] * 100, '+.2f'):>8}% "
              f"{row['segments']:>4} "
              f"{fmt(plan, '.1f'):>7} ({fmt(row['plan_share_by_status'] and row['plan_share_by_status'] * 100, '.1f'):>5}%) "
              f"{fmt(join, '.1f'):>7} ({fmt(row['join_share_by_status'] and row['join_share_by_status'] * 100, '.1f'):>5}%)")
    print()
    print("plan s: from the 202 to the first status document listing segments (probe, queue,")
    print("plan); join s: from the last segment done to completed (audio left, join, standby copy).")
    print("by the owner's log (s): probe = accepted..probed, plan = probed..split, pieces =")
    print("first dispatched..last done, join = the join child, finish = joined..finished")
    for row in rows:
        p = row["log_phases_seconds"]
        share = row.get("split_and_join_share_by_log")
        print(f"{row['nodes']} node(s): probe {fmt(p['probe'], '.2f')}, plan {fmt(p['plan'], '.2f')}, "
              f"pieces {fmt(p['pieces'], '.2f')}, join {fmt(p['join'], '.2f')}, "
              f"finish {fmt(p['finish'], '.2f')}; plan + join = "
              f"{fmt(share and share * 100, '.1f')} % of the wall time; "
              f"segments ran on {row['segment_nodes']}, at most {row['max_segments_running']} "
              f"at once, {row['attempts']} attempts, {p['pieces_lost']} pieces lost")
    print()
    print("CPU seconds by node (node + its transcoders; not slowed by other load):")
    if single:
        print(f"  single pass: {single.get('cpu_seconds')}, load {single.get('load_before')}")
    for row in rows:
        print(f"  {row['nodes']} node(s): {row['cpu_seconds_by_node']}, "
              f"speed-up the split allows {fmt(row.get('cpu_speedup_bound'), '.2f')}x "
              f"(one node's CPU / the busiest node's), total CPU "
              f"{fmt(row.get('cpu_total_vs_one_node'), '.3f')}x one node's; "
              f"load {row['load_before']} -> {row['load_after']}")
    print()
    print("targets (wall time):")
    verdicts = []
    for n, target in ((2, 1.7), (3, 2.4)):
        row = next((r for r in rows if r["nodes"] == n), None)
        if row is None or row.get("speedup") is None:
            print(f"  {n} nodes >= {target}x: not measured (nproc {targets['nproc']})")
            continue
        ok = row["speedup"] >= target
        verdicts.append(ok)
        print(f"  {n} nodes >= {target}x: {row['speedup']:.2f}x {'MET' if ok else 'MISSED'}")
    for row in rows:
        ceiling = machine["ceiling"].get(str(row["nodes"]))
        if row["nodes"] > 1 and ceiling and row.get("speedup"):
            print(f"  {row['nodes']} nodes against the machine's own ceiling {ceiling:.2f}x: "
                  f"{row['speedup'] / ceiling * 100:.0f} % of it (runs: {row['all_seconds']})")
    for row in rows:
        if row["nodes"] > 1 and row.get("size_penalty") is not None:
            ok = row["size_penalty"] <= 0.03
            verdicts.append(ok)
            print(f"  size within +3 % on {row['nodes']} nodes: "
                  f"{row['size_penalty'] * 100:+.2f} % {'MET' if ok else 'MISSED'}")
    print(f"\nwritten: {out_path}")


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    if command == "job":
        job(args[0], args[1], args[2], float(args[3]), args[4])
    elif command == "logs":
        logs(args[0], args[1], *args[2:])
    elif command == "report":
        report(args[0], args[1], *args[2:])
PY
}

split_pids=()
# Starts node-$1 pinned to core $2 with one worker, joining through
# cluster port $3 (none for the first).
start_split_node() {
    local i=$1 core=$2 seed=${3:-}
    local args=(serve --node-name "node-$i" --cookie "$COOKIE"
        --http "127.0.0.1:${split_http[$i]}" --cluster-listen "127.0.0.1:${split_cluster[$i]}"
        --workers 1 --heartbeat-ms 200 --failure-timeout-ms 1500
        --data-dir "$tmp/$run_name/data-$i")
    [ -n "$seed" ] && args+=(--seeds "127.0.0.1:$seed")
    local vars=(RUST_LOG="${RUST_LOG:-info}" VIDPRESS_LOG_FORMAT=json)
    [ -n "${SEGMENT_SECS:-}" ] && vars+=(VIDPRESS_SEGMENT_SECS="$SEGMENT_SECS")
    [ -n "${SEGMENT_MIN_SECS:-}" ] && vars+=(VIDPRESS_SEGMENT_MIN_SECS="$SEGMENT_MIN_SECS")
    env "${vars[@]}" taskset -c "$core" "$bin" "${args[@]}" >/dev/null 2>"$tmp/$run_name/node-$i.log" &
    pids+=($!)
    split_pids+=($!)
}

stop_split_nodes() {
    local pid
    for pid in "${split_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for _ in $(seq 50); do
        local alive=0
        for pid in "${split_pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
        [ "$alive" = 0 ] && break
        sleep 0.1
    done
    for pid in "${split_pids[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    split_pids=()
    pids=()
}

# Starts $1 nodes, each on its own core, and waits until each sees all.
start_split_cluster() {
    local count=$1 i
    mkdir -p "$tmp/$run_name"
    declare -gA split_http split_cluster
    for i in $(seq "$count"); do
        split_http[$i]=$(free_port)
        split_cluster[$i]=$(free_port)
    done
    start_split_node 1 0
    for i in $(seq 2 "$count"); do
        start_split_node "$i" $((i - 1)) "${split_cluster[1]}"
    done
    local deadline=$((SECONDS + 60))
    for i in $(seq "$count"); do
        while :; do
            up=$(curl -fsS --max-time 2 "http://127.0.0.1:${split_http[$i]}/cluster" 2>/dev/null | grep -o '"state":"up"' | wc -l || true)
            [ "${up:-0}" -ge "$count" ] && break
            if [ "$SECONDS" -ge "$deadline" ]; then
                echo "node-$i never saw $count nodes up" >&2
                for log in "$tmp/$run_name"/*.log; do tail -n 20 "$log" >&2; done
                exit 1
            fi
            sleep 0.2
        done
    done
    echo "$count node(s) up, node-1..node-$count on cores 0..$((count - 1))"
}

# CPU time, in clock ticks, of each running node and its reaped children
# (the transcoders it waited for): "pid:ticks ...".
split_cpu() {
    local pid
    for pid in "${split_pids[@]}"; do
        echo -n "$pid:$(awk '{print $14 + $15 + $16 + $17}' "/proc/$pid/stat") "
    done
}

# Runs one job on node-1 of the running cluster; writes $tmp/runs/$2.json.
split_job() {
    local query=$1 name=$2 kind=$3 count=$4
    local out=$tmp/runs/$name.json load_before cpu_before cpu_after
    load_before=$(cut -d' ' -f1-3 /proc/loadavg)
    echo "-- $name: POST /jobs$query ($load_before load) --"
    cpu_before=$(split_cpu)
    if ! python3 "$tmp/split_bench.py" job "http://127.0.0.1:${split_http[1]}" "$input" "$query" \
        "$JOB_TIMEOUT" "$out"; then
        for log in "$tmp/$run_name"/*.log; do
            echo "--- $(basename "$log") (last 30 lines) ---" >&2
            tail -n 30 "$log" >&2
        done
        exit 1
    fi
    cpu_after=$(split_cpu)
    local id
    id=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["id"])' "$out")
    python3 "$tmp/split_bench.py" logs "$id" "$tmp/runs/$name.log.json" "$tmp/$run_name"/node-*.log
    python3 - "$out" "$tmp/runs/$name.log.json" "$kind" "$count" "$cpu_before" "$cpu_after" \
        "$(getconf CLK_TCK)" "$load_before" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'PY'
import json, sys
out, lines, kind, count, before, after, tck, load_before, load_after = sys.argv[1:]
run = json.load(open(out))
run["log_lines"] = json.load(open(lines))
run["kind"], run["nodes"] = kind, int(count)
ticks = lambda text: [int(p.split(":")[1]) for p in text.split()]
# Node i is node-(i+1), pinned to core i.
run["cpu_seconds"] = [round((b - a) / int(tck), 2) for a, b in zip(ticks(before), ticks(after))]
run["load_before"], run["load_after"] = load_before, load_after
json.dump(run, open(out, "w"), indent=1)
print(f"   {run['seconds']:.1f} s (202 after {run['accepted_seconds']:.1f} s), "
      f"{run['segments']} segments on {sorted(set(run['segment_nodes'].values()))}, "
      f"{run['bytes']} bytes, {run['attempt']} attempts, CPU s by node {run['cpu_seconds']}, "
      f"load {load_before} -> {load_after}")
for line in run["log_lines"]:
    if line["message"] in ("input probed", "job split", "joining", "joined", "job finished"):
        print(f"   log {line['node']}: {line['message']} {line['fields']}")
PY
}

# The machine's own scaling: the ffmpeg CLI on 30 s of the input alone on
# core 0, then as k copies at once on cores 0..k-1 for each cluster size k
# > 1; writes "copies wall-seconds" lines to $tmp/machine.txt.
split_machine_reference() {
    local k core pids_ref=() start
    echo "== the machine: the ffmpeg CLI alone, then on ${*:2} cores at once =="
    encode_slice() { # core out
        local t0 t1
        t0=$(date +%s.%N)
        timeout 600 taskset -c "$1" ffmpeg -hide_banner -loglevel error -nostdin -y -ss 20 -t 30 \
            -i "$input" -c:v libx264 -preset veryfast -crf 28 -an -f null - </dev/null
        t1=$(date +%s.%N)
        echo "$t0 $t1" | awk '{printf "%.3f\n", $2 - $1}' >"$2"
    }
    : >"$tmp/machine.txt"
    local rep
    for rep in $(seq "${REPEATS:-1}"); do
        encode_slice 0 "$tmp/machine-alone"
        echo "$rep 1 $(cat "$tmp/machine-alone")" >>"$tmp/machine.txt"
        for k in "${@:2}"; do
            pids_ref=()
            for core in $(seq 0 $((k - 1))); do
                encode_slice "$core" "$tmp/machine-$k-$core" &
                pids_ref+=($!)
            done
            for start in "${pids_ref[@]}"; do wait "$start"; done
            for core in $(seq 0 $((k - 1))); do
                echo "$rep $k $(cat "$tmp/machine-$k-$core")" >>"$tmp/machine.txt"
            done
        done
    done
    awk '{print "   run " $1 ", " $2 " at once: " $3 " s"}' "$tmp/machine.txt"
}

split_bench() {
    command -v taskset >/dev/null || { echo "taskset (util-linux) is needed" >&2; exit 1; }
    command -v python3 >/dev/null || { echo "python3 is needed" >&2; exit 1; }
    local cores
    cores=$(nproc)
    if [ "$cores" -lt 2 ]; then
        echo "--split needs at least 2 cores (nproc: $cores)" >&2
        exit 1
    fi
    input=$(split_input)
    write_split_helper
    mkdir -p "$tmp/runs"
    local sizes=(1 2)
    [ "$cores" -ge 3 ] && sizes+=(3)
    echo "== commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(git status --porcelain 2>/dev/null | wc -l) changed files in the work tree =="
    echo "== input $(du -h "$input" | cut -f1) $input; nproc $cores; sizes ${sizes[*]} =="
    local n rep repeats=${REPEATS:-1} runs=()
    for n in "${sizes[@]}"; do
        run_name=cluster-$n
        echo "== $n node(s) =="
        start_split_cluster "$n"
        for rep in $(seq "$repeats"); do
            split_job "" "split-$n-$rep" split "$n"
            runs+=("$tmp/runs/split-$n-$rep.json")
            if [ "$n" = 1 ]; then
                split_job "?parallel=off" "single-1-$rep" single 1
                runs+=("$tmp/runs/single-1-$rep.json")
            fi
        done
        stop_split_nodes
    done
    split_machine_reference "${sizes[@]}"
    python3 - "$tmp/targets.json" "$input" "$cores" "$repeats" "$tmp/machine.txt" <<'PY'
import json, os, sys
path, source, cores, repeats, machine = sys.argv[1:]
# Per run: the time alone, and the mean time of k copies at once; the
# medians over the runs.
walls = {}
for line in open(machine):
    rep, copies, wall = line.split()
    walls.setdefault(int(copies), {}).setdefault(int(rep), []).append(float(wall))
def median(values):
    values = sorted(values)
    middle = len(values) // 2
    return values[middle] if len(values) % 2 else (values[middle - 1] + values[middle]) / 2
alone = median([w[0] for w in walls.pop(1).values()])
walls = {k: [round(sum(w) / len(w), 3) for w in reps.values()] for k, reps in walls.items()}
json.dump({"input": source, "nproc": int(cores), "repeats": int(repeats),
           "segment_secs": os.environ.get("SEGMENT_SECS") or "default (30)",
           "segment_min_secs": os.environ.get("SEGMENT_MIN_SECS") or "default (120)",
           "speedup_2_nodes": 1.7, "speedup_3_nodes": 2.4, "size_penalty_max": 0.03,
           "machine": {"alone_seconds": alone,
                       "together_seconds": {str(k): v for k, v in walls.items()},
                       "ceiling": {str(k): round(k * alone / median(v), 3)
                                   for k, v in walls.items()}}},
          open(path, "w"))
PY
    python3 "$tmp/split_bench.py" report "$root/target/bench/split.json" "$tmp/targets.json" "${runs[@]}"
}

if [ "$mode" = split ]; then
    split_bench "$@"
    ok=1
    exit 0
fi

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
