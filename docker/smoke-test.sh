#!/usr/bin/env bash
# End-to-end check of the Docker deployment: builds vidpress:local, starts the
# three-node cluster of docker/compose.yaml (project vidpress-smoke), waits
# until every node is ready and sees the other two up, submits a generated
# clip to node-a (as many copies at once as the cluster has workers, so some
# run on other nodes), polls them on node-c, downloads the results from
# node-b and checks they are H.264 + AAC. Containers, network and volumes are always
# removed at the end. Prints PASS or FAIL; exits non-zero on failure.
#
#   docker/smoke-test.sh
#
# Needs on the host: docker with docker-compose (or `docker compose`), curl,
# jq, ffmpeg and ffprobe. VIDPRESS_PORT_A/B/C move the published ports
# (default 8081-8083); READY_TIMEOUT and JOB_TIMEOUT bound the waits (s).
set -euo pipefail
cd "$(dirname "$0")/.."

project=vidpress-smoke
ready_timeout=${READY_TIMEOUT:-60}
job_timeout=${JOB_TIMEOUT:-120}
export VIDPRESS_PORT_A=${VIDPRESS_PORT_A:-8081}
export VIDPRESS_PORT_B=${VIDPRESS_PORT_B:-8082}
export VIDPRESS_PORT_C=${VIDPRESS_PORT_C:-8083}
# A fresh secret for this run unless one is given.
export VIDPRESS_COOKIE=${VIDPRESS_COOKIE:-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')}
declare -A url=(
    [node-a]=http://127.0.0.1:$VIDPRESS_PORT_A
    [node-b]=http://127.0.0.1:$VIDPRESS_PORT_B
    [node-c]=http://127.0.0.1:$VIDPRESS_PORT_C
)

say() { printf 'smoke-test: %s\n' "$*" >&2; }
fail() {
    say "$*"
    echo "FAIL: docker smoke test: $*"
    exit 1
}

for tool in docker curl jq ffmpeg ffprobe; do
    command -v "$tool" >/dev/null || fail "$tool is needed on the host"
done
if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
elif command -v docker-compose >/dev/null; then
    compose=(docker-compose)
else
    fail "neither 'docker compose' nor 'docker-compose' works"
fi
compose+=(-f docker/compose.yaml -p "$project")

work=$(mktemp -d)
started_up=0
cleanup() {
    local status=$?
    if ((started_up)); then
        if ((status != 0)); then
            say "logs of the failed run (last 40 lines per node):"
            "${compose[@]}" logs --no-color --tail=40 >&2 || true
        fi
        say "removing containers, network and volumes"
        "${compose[@]}" down -v --remove-orphans --timeout 45 >&2 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for port in "$VIDPRESS_PORT_A" "$VIDPRESS_PORT_B" "$VIDPRESS_PORT_C"; do
    # curl's exit code 7: nothing accepted the connection, the port is free.
    rc=0
    curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/" || rc=$?
    ((rc == 7)) || fail "127.0.0.1:$port is already in use (set VIDPRESS_PORT_A/B/C)"
done

t=$SECONDS
docker/build-image.sh || fail "the image did not build"
say "image ready in $((SECONDS - t)) s"

ffmpeg -nostdin -loglevel error -f lavfi -i testsrc2=size=320x240:rate=25 \
    -f lavfi -i sine -t 3 -c:v libx264 -c:a aac "$work/clip.mp4" ||
    fail "ffmpeg could not make the test clip"

# A previous run that was killed hard may have left the project behind.
"${compose[@]}" down -v --remove-orphans --timeout 5 >/dev/null 2>&1 || true
started_up=1
t=$SECONDS
"${compose[@]}" up -d >&2 || fail "docker compose up failed"
up_ms=$(date +%s%3N)

# Ready: /readyz 200 on every node and /cluster on every node lists the
# three nodes, all up.
deadline=$((SECONDS + ready_timeout))
while :; do
    ready=0
    for node in node-a node-b node-c; do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "${url[$node]}/readyz" || true)
        [[ $code == 200 ]] || continue
        up=$(curl -s --max-time 2 "${url[$node]}/cluster" |
            jq -r '[.nodes[] | select(.state == "up") | .name] | sort | join(",")' 2>/dev/null || true)
        [[ $up == node-a,node-b,node-c ]] && ready=$((ready + 1))
    done
    ((ready == 3)) && break
    ((SECONDS < deadline)) || fail "the cluster was not ready within ${ready_timeout} s ($ready of 3 nodes ready)"
    sleep 0.2
done
ready_ms=$(($(date +%s%3N) - up_ms))
ready_after=$((ready_ms / 1000)).$(printf '%03d' $((ready_ms % 1000)))
say "'up -d' took $((SECONDS - t)) s; cluster ready ${ready_after} s after it returned: 3 nodes, each sees 3 up"

# The image serves the web page (compiled into the binary) and nothing else
# is needed for it.
page_type=$(curl -s -o "$work/page.html" -w '%{content_type}' --max-time 2 "${url[node-b]}/")
[[ $page_type == "text/html; charset=utf-8" ]] || fail "GET / on node-b answered '$page_type', not the web page"
grep -q '<title>vidpress</title>' "$work/page.html" || fail "GET / on node-b is not the vidpress page"

# Submit to node-a, at once, as many jobs as the cluster has workers (at
# least more than node-a has), so that some run on node-b or node-c and their
# bytes cross the network between containers.
workers=$(curl -s --max-time 2 "${url[node-a]}/cluster" | jq '[.nodes[].workers] | add')
workers_a=$(curl -s --max-time 2 "${url[node-a]}/cluster" | jq '.nodes[] | select(.name == "node-a") | .workers')
jobs=$((workers > workers_a ? workers : workers_a + 1))
for i in $(seq "$jobs"); do
    curl -s -o "$work/submit-$i.json" -w '%{http_code}' --max-time 30 \
        --data-binary @"$work/clip.mp4" "${url[node-a]}/jobs?preset=veryfast" >"$work/submit-$i.code" &
done
wait
ids=()
for i in $(seq "$jobs"); do
    code=$(cat "$work/submit-$i.code")
    [[ $code == 202 ]] || fail "submit to node-a answered $code: $(cat "$work/submit-$i.json")"
    ids+=("$(jq -r .id "$work/submit-$i.json")")
done
say "$jobs jobs accepted by node-a (the cluster has $workers workers)"

# Poll each on node-c until 200.
deadline=$((SECONDS + job_timeout))
ran_on=()
for id in "${ids[@]}"; do
    while :; do
        code=$(curl -s -o "$work/status.json" -w '%{http_code}' --max-time 5 "${url[node-c]}/jobs/$id" || true)
        case $code in
            200) break ;;
            202 | 000) ;;
            *) fail "polling job $id on node-c answered $code: $(cat "$work/status.json" 2>/dev/null)" ;;
        esac
        ((SECONDS < deadline)) || fail "job $id did not complete within ${job_timeout} s"
        sleep 0.5
    done
    ran_on+=("$(jq -r .node "$work/status.json")")
done
say "all jobs completed (polled on node-c), transcoded on: ${ran_on[*]}"

# Download each from node-b and check it.
for id in "${ids[@]}"; do
    code=$(curl -s -o "$work/out.mp4" -w '%{http_code}' --max-time 60 "${url[node-b]}/jobs/$id/result") ||
        fail "download of job $id from node-b failed"
    [[ $code == 200 ]] || fail "download of job $id from node-b answered $code"
    codecs=$(ffprobe -v error -show_entries stream=codec_type,codec_name -of csv=p=0 "$work/out.mp4" | sort | paste -sd' ')
    [[ $codecs == "aac,audio h264,video" ]] ||
        fail "the result of job $id has streams '$codecs', not h264 video + aac audio"
done
remote=0
for node in "${ran_on[@]}"; do [[ $node != node-a ]] && remote=$((remote + 1)); done
((remote > 0)) || fail "every job ran on node-a: dispatch to other nodes was not exercised"

echo "PASS: docker smoke test: 3 nodes ready in ${ready_after} s; $jobs jobs submitted to node-a ran on ${ran_on[*]}, polled on node-c, downloaded from node-b (h264 + aac); node-b serves the web page"
