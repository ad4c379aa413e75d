#!/usr/bin/env bash
# Fault-injection suite of the Docker deployment (issue 4): builds
# vidpress:local, starts the three-node cluster of docker/compose.yaml as its
# own compose project (vidpress-fault) on its own loopback ports, with a fresh
# cookie, a fresh CA, node certificates and API keys (docker/make-secrets.sh
# into target/docker-fault/secrets: HTTPS, mutual TLS between nodes, keys of
# the tenants acme and globex and an admin key) and fast failure detection
# (docker/fault/compose.override.yaml), then runs docker/fault/faults.py over
# HTTPS with those keys: rounds of jobs, submitted in turn as acme and
# globex, one fault per round
#
#   kill-worker      docker kill of the node running a job
#   kill-accepter    docker kill of the node that accepted a job, right after its 202
#   pause            docker pause of a node running a job, unpause after FAULT_HOLD s
#   partition        docker network disconnect of a node running a job, reconnect after FAULT_HOLD s
#   restart          docker restart of a node running a job (SIGTERM: it drains first)
#   rolling-restart  docker restart of node-a, node-b, node-c in turn, each back up before the next
#   kill-segment     docker kill of a node (not the owner) running a segment (20-80 % encoded) of a
#                    long job split into segments (issue 16), while others are done; started again
#                    once the job has ended
#   pause-segment    docker pause of such a node (preferably the job's standby) for FAULT_HOLD s
#
# The nodes split inputs longer than FAULT_SEGMENT_MIN_SECS (30) into segments
# of about FAULT_SEGMENT_SECS (8): the 24 s clip of the other rounds runs in one
# pass, a second, long clip (FAULT_LONG_CLIP_SECONDS, 60) is split. Before the
# first split round the long clip runs once split and once with parallel=off,
# without a fault; every long-clip output is checked frame by frame (frame
# count, continuous timestamps, audio within one AAC frame of the video).
#
# killed nodes are started again before the next round; then a Jepsen-style
# total-queue check of every accepted job on every node (lost, duplicated,
# ffprobe of every output; each job polled with its own tenant's key, and a
# sample asked with the other's, which must get 404) and recovery times per
# fault kind.
#
#   docker/fault-test.sh            # prints "N passed, M failed"; exit 0 only if nothing was
#                                   # lost or duplicated and every output is valid
#
# Results in target/fault-test/: summary.json, timeline.txt and events.jsonl
# (every submission, observation, fault and recovery), logs/ (each node's log,
# saved before the teardown). Containers, network and volumes are always
# removed, also on failure or Ctrl-C.
#
# Needs on the host: docker with docker-compose (or `docker compose`), curl,
# openssl, ffmpeg, ffprobe, python3 >= 3.11 (standard library only).
# Settings (environment):
#   FAULT_PORT_A/B/C       host ports of the nodes (default 18181-18183)
#   FAULT_PROJECT          compose project name (default vidpress-fault), so that two
#                          checkouts can run the suite at once (with other ports and VIDPRESS_IMAGE)
#   FAULT_ROUNDS           comma-separated fault kinds, one round each
#                          (default: each of the six kinds, twice, then kill-segment and
#                          pause-segment once each)
#   FAULT_JOBS_PER_ROUND   jobs submitted at the start of a round (default 5)
#   FAULT_PRESET           x264 preset of the jobs (default slow)
#   FAULT_CLIP_SECONDS     length of the 640x360 test clip (default 24)
#   FAULT_LONG_CLIP_SECONDS  length of the long clip, which is split (default 60)
#   FAULT_SEGMENT_SECS     the nodes' VIDPRESS_SEGMENT_SECS (default 8)
#   FAULT_SEGMENT_MIN_SECS the nodes' VIDPRESS_SEGMENT_MIN_SECS (default 30): at least
#                          FAULT_CLIP_SECONDS, under FAULT_LONG_CLIP_SECONDS
#   FAULT_HOLD             seconds a pause or a partition lasts (default 8)
#   FAULT_BUDGET           seconds the whole run may take (default 1200)
#   FAULT_STRICT=1         also fail when a job ended `failed`, a live node answered 404 for an
#                          accepted job, or a job was re-run after done (anomalies otherwise)
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
budget=${FAULT_BUDGET:-1200}
project=${FAULT_PROJECT:-vidpress-fault}
out=target/fault-test
export VIDPRESS_PORT_A=${FAULT_PORT_A:-18181}
export VIDPRESS_PORT_B=${FAULT_PORT_B:-18182}
export VIDPRESS_PORT_C=${FAULT_PORT_C:-18183}
export FAULT_HEARTBEAT_MS=${FAULT_HEARTBEAT_MS:-300}
export FAULT_FAILURE_TIMEOUT_MS=${FAULT_FAILURE_TIMEOUT_MS:-1500}
all_kinds=kill-worker,kill-accepter,pause,partition,restart,rolling-restart
split_kinds=kill-segment,pause-segment
rounds=${FAULT_ROUNDS:-$all_kinds,$all_kinds,$split_kinds}
clip_seconds=${FAULT_CLIP_SECONDS:-24}
long_clip_seconds=${FAULT_LONG_CLIP_SECONDS:-60}
# Read by compose.override.yaml.
export FAULT_SEGMENT_SECS=${FAULT_SEGMENT_SECS:-8}
export FAULT_SEGMENT_MIN_SECS=${FAULT_SEGMENT_MIN_SECS:-30}
# A fresh secret for this run.
VIDPRESS_COOKIE=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
export VIDPRESS_COOKIE
# This run's CA, certificates and keys, mounted by compose.yaml.
export VIDPRESS_SECRETS=$PWD/target/docker-fault/secrets

say() { printf 'fault-test: %s\n' "$*" >&2; }
fail() {
    say "$*"
    echo "FAIL: fault test: $*"
    exit 2
}

for tool in docker curl openssl ffmpeg ffprobe python3 timeout; do
    command -v "$tool" >/dev/null || fail "$tool is needed on the host"
done
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || fail "python3 >= 3.11 is needed"
((clip_seconds <= FAULT_SEGMENT_MIN_SECS && FAULT_SEGMENT_MIN_SECS < long_clip_seconds)) ||
    fail "FAULT_SEGMENT_MIN_SECS ($FAULT_SEGMENT_MIN_SECS) must be at least FAULT_CLIP_SECONDS ($clip_seconds) and under FAULT_LONG_CLIP_SECONDS ($long_clip_seconds)"
if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null; then
    compose=(docker-compose)
else
    fail "neither 'docker compose' nor 'docker-compose' works"
fi
compose+=(-f docker/compose.yaml -f docker/fault/compose.override.yaml -p "$project")

rm -rf "$out"
mkdir -p "$out/logs"

started_up=0
pypid=
cleanup() {
    local status=$?
    trap - INT TERM
    if [[ -n $pypid ]] && kill -0 "$pypid" 2>/dev/null; then
        # Let the checker write what it knows.
        kill -TERM "$pypid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pypid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$pypid" 2>/dev/null || true
    fi
    if ((started_up)); then
        say "saving the nodes' logs to $out/logs"
        for node in node-a node-b node-c; do
            cid=$("${compose[@]}" ps -q "$node" 2>/dev/null || true)
            [[ -n $cid ]] || continue
            docker logs --timestamps "$cid" >"$out/logs/$node.log" 2>&1 || true
            docker inspect "$cid" >"$out/logs/$node.inspect.json" 2>/dev/null || true
            # A paused container cannot be stopped; a disconnected one is removed with its network.
            docker unpause "$cid" >/dev/null 2>&1 || true
        done
        say "removing containers, network and volumes"
        "${compose[@]}" kill >/dev/null 2>&1 || true
        "${compose[@]}" down -v --remove-orphans --timeout 5 >&2 || true
        left=$(docker ps -aq --filter "label=com.docker.compose.project=$project")
        [[ -z $left ]] || { say "removing leftover containers: $left"; docker rm -f $left >/dev/null || true; }
        left=$(docker volume ls -q --filter "label=com.docker.compose.project=$project")
        [[ -z $left ]] || { say "removing leftover volumes: $left"; docker volume rm $left >/dev/null || true; }
        left=$(docker network ls -q --filter "label=com.docker.compose.project=$project")
        [[ -z $left ]] || { say "removing leftover networks: $left"; docker network rm $left >/dev/null || true; }
    fi
    rm -rf "$VIDPRESS_SECRETS"
    say "took $((SECONDS - started)) s"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for port in "$VIDPRESS_PORT_A" "$VIDPRESS_PORT_B" "$VIDPRESS_PORT_C"; do
    # curl's exit code 7: nothing accepted the connection, the port is free.
    rc=0
    curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/" || rc=$?
    ((rc == 7)) || fail "127.0.0.1:$port is already in use (set FAULT_PORT_A/B/C)"
done

t=$SECONDS
docker/build-image.sh || fail "the image did not build"
say "image ready in $((SECONDS - t)) s"

rm -rf "$VIDPRESS_SECRETS"
docker/make-secrets.sh "$VIDPRESS_SECRETS" || fail "the certificates and keys could not be made"

# The test clips, each made once: 640x360 testsrc2 + a sine tone, long enough
# that an encode with FAULT_PRESET takes several seconds; the long one is split
# by the nodes.
clip_dir=target/fault-test-clip
clip=$clip_dir/testsrc2-640x360-${clip_seconds}s.mp4
long_clip=$clip_dir/testsrc2-640x360-${long_clip_seconds}s.mp4
for seconds in "$clip_seconds" "$long_clip_seconds"; do
    path=$clip_dir/testsrc2-640x360-${seconds}s.mp4
    [[ ! -s $path ]] || continue
    mkdir -p "$clip_dir"
    ffmpeg -nostdin -loglevel error -y -f lavfi -i testsrc2=size=640x360:rate=25 \
        -f lavfi -i sine=frequency=440:sample_rate=48000 -t "$seconds" \
        -c:v libx264 -preset ultrafast -pix_fmt yuv420p -c:a aac -b:a 96k "$path.tmp.mp4" ||
        fail "ffmpeg could not make the $seconds s test clip"
    mv "$path.tmp.mp4" "$path"
done
duration=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$clip")
long_duration=$(ffprobe -v error -show_entries format=duration -of csv=p=0 "$long_clip")

# A previous run that was killed hard may have left the project behind.
"${compose[@]}" down -v --remove-orphans --timeout 5 >/dev/null 2>&1 || true
started_up=1
"${compose[@]}" up -d >&2 || fail "docker compose up failed"
cids=()
for node in node-a node-b node-c; do
    cid=$("${compose[@]}" ps -q "$node")
    [[ -n $cid ]] || fail "no container for $node"
    cids+=("$cid")
done
network=$(docker inspect -f '{{range $name, $_ := .NetworkSettings.Networks}}{{$name}} {{end}}' "${cids[0]}" | awk '{print $1}')
[[ -n $network ]] || fail "cannot find the compose network"
say "cluster $project up: node-a/b/c on 127.0.0.1:$VIDPRESS_PORT_A/$VIDPRESS_PORT_B/$VIDPRESS_PORT_C, network $network"

# The checker's own deadline leaves a minute for saving logs and tearing down;
# `timeout` is only the backstop.
deadline=$(($(date +%s) + budget - (SECONDS - started) - 60))
limit=$((deadline - $(date +%s) + 30))
((limit > 120)) || fail "no time left for the workload (FAULT_BUDGET=$budget)"
rc=0
timeout --foreground -s TERM -k 15 "$limit" python3 docker/fault/faults.py \
    --urls "https://127.0.0.1:$VIDPRESS_PORT_A,https://127.0.0.1:$VIDPRESS_PORT_B,https://127.0.0.1:$VIDPRESS_PORT_C" \
    --ca "$VIDPRESS_SECRETS/ca.pem" --tokens "$VIDPRESS_SECRETS/tokens" \
    --containers "$(IFS=,; echo "${cids[*]}")" \
    --network "$network" \
    --clip "$clip" --clip-duration "$duration" \
    --long-clip "$long_clip" --long-clip-duration "$long_duration" \
    --segment-secs "$FAULT_SEGMENT_SECS" --segment-min-secs "$FAULT_SEGMENT_MIN_SECS" \
    --out "$out" \
    --rounds "$rounds" \
    --jobs-per-round "${FAULT_JOBS_PER_ROUND:-5}" \
    --preset "${FAULT_PRESET:-slow}" \
    --hold "${FAULT_HOLD:-8}" \
    --deadline "$deadline" &
pypid=$!
wait "$pypid" || rc=$?
pypid=
say "summary: $out/summary.json; timeline: $out/timeline.txt; node logs: $out/logs/"
exit "$rc"
