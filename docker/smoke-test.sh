#!/usr/bin/env bash
# End-to-end check of the Docker deployment as shipped, API keys and TLS on:
# builds vidpress:local, makes a throwaway CA, node certificates and API keys
# (docker/make-secrets.sh into target/docker-smoke/secrets), starts the
# three-node cluster of docker/compose.yaml (project vidpress-smoke), waits
# until every node is ready and sees the other two up, then checks over HTTPS
# (curl --cacert with the run's CA, a bearer key on every request):
#
# - plain HTTP to a node's port gets no HTTP answer; no key or a wrong key
#   gets 401 (WWW-Authenticate: Bearer); a tenant's key on /cluster gets 403;
#   a key added to the mounted key file is let in after SIGHUP;
# - tenant acme submits a generated clip to node-a (as many copies at once as
#   the cluster has workers, so some run on node-b or node-c: their bytes move
#   between nodes over HTTPS verified against the CA, signed with the cookie);
# - tenant globex gets 404 for acme's job through every node (poll, result,
#   cancel, the WebSocket) and does not see it listed; its cancel stops nothing;
# - the jobs complete, polled on node-c; their results, downloaded from
#   node-b, are H.264 + AAC;
# - the CLI submits as globex through node-b over https and wss (--ca,
#   VIDPRESS_TOKEN) and waits for the result; acme cannot see that job.
#
# Containers, network, volumes and the run's keys are always removed at the
# end. Prints PASS or FAIL; exits non-zero on failure.
#
#   docker/smoke-test.sh
#
# Needs on the host: docker with docker-compose (or `docker compose`), curl,
# jq, openssl, ffmpeg and ffprobe. VIDPRESS_PORT_A/B/C move the published
# ports (default 8081-8083); READY_TIMEOUT and JOB_TIMEOUT bound the waits (s).
set -euo pipefail
cd "$(dirname "$0")/.."

project=vidpress-smoke
started=$SECONDS
ready_timeout=${READY_TIMEOUT:-60}
job_timeout=${JOB_TIMEOUT:-120}
export VIDPRESS_PORT_A=${VIDPRESS_PORT_A:-8081}
export VIDPRESS_PORT_B=${VIDPRESS_PORT_B:-8082}
export VIDPRESS_PORT_C=${VIDPRESS_PORT_C:-8083}
# A fresh secret for this run unless one is given.
export VIDPRESS_COOKIE=${VIDPRESS_COOKIE:-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')}
# This run's CA, certificates and keys, mounted by compose.yaml.
export VIDPRESS_SECRETS=$PWD/target/docker-smoke/secrets
nodes=(node-a node-b node-c)
declare -A url=(
    [node-a]=https://127.0.0.1:$VIDPRESS_PORT_A
    [node-b]=https://127.0.0.1:$VIDPRESS_PORT_B
    [node-c]=https://127.0.0.1:$VIDPRESS_PORT_C
)

say() { printf 'smoke-test: %s\n' "$*" >&2; }
fail() {
    say "$*"
    echo "FAIL: docker smoke test: $*"
    exit 1
}

for tool in docker curl jq openssl ffmpeg ffprobe; do
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
    rm -rf "$work" "$VIDPRESS_SECRETS"
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

rm -rf "$VIDPRESS_SECRETS"
docker/make-secrets.sh "$VIDPRESS_SECRETS" || fail "the certificates and keys could not be made"
ca=$VIDPRESS_SECRETS/ca.pem
declare -A key
for name in admin acme globex; do
    key[$name]=$(cat "$VIDPRESS_SECRETS/tokens/$name")
done

# api KEY CURL-ARGS…: curl over HTTPS trusting only the run's CA, with a
# tenant's key ("" for none); the token goes through a config on stdin, not
# the command line.
api() {
    local who=$1
    shift
    if [[ -n $who ]]; then
        printf 'header = "Authorization: Bearer %s"\n' "${key[$who]}" |
            curl -s --cacert "$ca" -K - "$@"
    else
        curl -s --cacert "$ca" "$@"
    fi
}

ffmpeg -nostdin -loglevel error -f lavfi -i testsrc2=size=320x240:rate=25 \
    -f lavfi -i sine -t 3 -c:v libx264 -c:a aac "$work/clip.mp4" ||
    fail "ffmpeg could not make the test clip"

# A previous run that was killed hard may have left the project behind.
"${compose[@]}" down -v --remove-orphans --timeout 5 >/dev/null 2>&1 || true
started_up=1
t=$SECONDS
"${compose[@]}" up -d >&2 || fail "docker compose up failed"
up_ms=$(date +%s%3N)

# Ready: /readyz 200 on every node (no key needed) and /cluster on every
# node (an admin key) lists the three nodes, all up.
deadline=$((SECONDS + ready_timeout))
while :; do
    ready=0
    for node in "${nodes[@]}"; do
        code=$(api "" -o /dev/null -w '%{http_code}' --max-time 2 "${url[$node]}/readyz" || true)
        [[ $code == 200 ]] || continue
        up=$(api admin --max-time 2 "${url[$node]}/cluster" |
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

# The ports speak TLS only: a plain HTTP request is let in (curl's exit
# code 7 would mean nothing listens) but gets no HTTP answer.
for node in "${nodes[@]}"; do
    plain=${url[$node]/https:/http:}
    rc=0
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$plain/healthz") || rc=$?
    [[ $code == 000 && $rc != 0 && $rc != 7 ]] ||
        fail "plain HTTP to $node answered $code (curl exit $rc): the port should take it and speak TLS only"
done
# Keys: none or a wrong one is 401 with a Bearer challenge; a tenant's key
# on an admin route is 403.
for node in "${nodes[@]}"; do
    code=$(api "" -o /dev/null -D "$work/headers" -w '%{http_code}' --max-time 5 "${url[$node]}/jobs")
    [[ $code == 401 ]] || fail "GET /jobs without a key on $node answered $code, not 401"
    grep -qi '^www-authenticate: bearer' "$work/headers" ||
        fail "the 401 of $node has no 'WWW-Authenticate: Bearer'"
    code=$(printf 'header = "Authorization: Bearer %s"\n' "$(openssl rand -hex 24)" |
        curl -s --cacert "$ca" -K - -o /dev/null -w '%{http_code}' --max-time 5 "${url[$node]}/jobs")
    [[ $code == 401 ]] || fail "GET /jobs with a wrong key on $node answered $code, not 401"
    code=$(api acme -o /dev/null -w '%{http_code}' --max-time 5 "${url[$node]}/cluster")
    [[ $code == 403 ]] || fail "GET /cluster with a tenant's key on $node answered $code, not 403"
done
say "plain HTTP gets no answer; no key or a wrong one gets 401, a tenant's key on /cluster 403 (every node)"

# SIGHUP re-reads the mounted key file: a key added to it on the host is
# let in by every node, without a restart.
key[initech]=$(openssl rand -hex 24)
keys_file=$VIDPRESS_SECRETS/shared/api-keys
if [[ -w $keys_file ]]; then
    echo "initech:${key[initech]}" >>"$keys_file"
else
    echo "initech:${key[initech]}" | sudo -n tee -a "$keys_file" >/dev/null || fail "cannot add a key to $keys_file"
fi
"${compose[@]}" kill -s HUP >/dev/null 2>&1 || fail "docker compose kill -s HUP failed"
for node in "${nodes[@]}"; do
    deadline=$((SECONDS + 10))
    until [[ $(api initech -o /dev/null -w '%{http_code}' --max-time 5 "${url[$node]}/jobs") == 200 ]]; do
        ((SECONDS < deadline)) || fail "$node did not take the key added to its key file within 10 s of SIGHUP"
        sleep 0.2
    done
done
say "a key added to the key file is let in by every node after SIGHUP"

# The image serves the web page (compiled into the binary), which needs no key.
page_type=$(api "" -o "$work/page.html" -w '%{content_type}' --max-time 2 "${url[node-b]}/")
[[ $page_type == "text/html; charset=utf-8" ]] || fail "GET / on node-b answered '$page_type', not the web page"
grep -q '<title>vidpress</title>' "$work/page.html" || fail "GET / on node-b is not the vidpress page"

# Submit to node-a as tenant acme, at once, as many jobs as the cluster has
# workers (at least more than node-a has), so that some run on node-b or
# node-c and their bytes cross the network between containers.
api admin --max-time 2 "${url[node-a]}/cluster" >"$work/cluster.json"
workers=$(jq '[.nodes[].workers] | add' "$work/cluster.json")
workers_a=$(jq '.nodes[] | select(.name == "node-a") | .workers' "$work/cluster.json")
jobs=$((workers > workers_a ? workers : workers_a + 1))
for i in $(seq "$jobs"); do
    api acme -o "$work/submit-$i.json" -w '%{http_code}' --max-time 30 \
        --data-binary @"$work/clip.mp4" "${url[node-a]}/jobs?preset=veryfast" >"$work/submit-$i.code" &
done
wait
ids=()
for i in $(seq "$jobs"); do
    code=$(cat "$work/submit-$i.code")
    [[ $code == 202 ]] || fail "submit to node-a answered $code: $(cat "$work/submit-$i.json")"
    ids+=("$(jq -r .id "$work/submit-$i.json")")
done
say "$jobs jobs accepted by node-a for acme (the cluster has $workers workers)"

# Another tenant cannot tell acme's job exists, through any node: 404 on
# poll, result, cancel and the WebSocket, and absent from its listing. (Its
# DELETE must not cancel it: the job is checked to complete below.)
id=${ids[0]}
for node in "${nodes[@]}"; do
    base=${url[$node]}
    for call in "GET /jobs/$id" "GET /jobs/$id/result" "DELETE /jobs/$id"; do
        code=$(api globex -o "$work/other.json" -w '%{http_code}' --max-time 10 -X "${call%% *}" "$base${call#* }")
        [[ $code == 404 ]] || fail "globex's $call on $node answered $code, not 404: $(cat "$work/other.json")"
    done
    code=$(api globex -o /dev/null -w '%{http_code}' --max-time 10 --http1.1 \
        -H 'Connection: Upgrade' -H 'Upgrade: websocket' -H 'Sec-WebSocket-Version: 13' \
        -H "Sec-WebSocket-Key: $(openssl rand -base64 16)" "$base/jobs/$id/events")
    [[ $code == 404 ]] || fail "globex's WebSocket to job $id on $node answered $code, not 404"
    listed=$(api globex --max-time 10 "$base/jobs?limit=1000" | jq --arg id "$id" '[.jobs[] | select(.id == $id)] | length')
    [[ $listed == 0 ]] || fail "globex's GET /jobs on $node lists acme's job $id"
    code=$(api admin -o /dev/null -w '%{http_code}' --max-time 10 "$base/jobs/$id")
    [[ $code == 200 || $code == 202 ]] || fail "the admin key's poll of job $id on $node answered $code"
done
say "globex gets 404 for acme's job $id on every node (poll, result, cancel, WebSocket) and does not list it; admin sees it"

# Poll each on node-c until 200.
deadline=$((SECONDS + job_timeout))
ran_on=()
for id in "${ids[@]}"; do
    while :; do
        code=$(api acme -o "$work/status.json" -w '%{http_code}' --max-time 5 "${url[node-c]}/jobs/$id" || true)
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
    code=$(api acme -o "$work/out.mp4" -w '%{http_code}' --max-time 60 "${url[node-b]}/jobs/$id/result") ||
        fail "download of job $id from node-b failed"
    [[ $code == 200 ]] || fail "download of job $id from node-b answered $code"
    codecs=$(ffprobe -v error -show_entries stream=codec_type,codec_name -of csv=p=0 "$work/out.mp4" | sort | paste -sd' ')
    [[ $codecs == "aac,audio h264,video" ]] ||
        fail "the result of job $id has streams '$codecs', not h264 video + aac audio"
done
# A job run by node-b or node-c had its input fetched from node-a, and its
# result copied back, over the nodes' HTTPS ports (they serve nothing else)
# with signed requests: its completion shows that path works.
remote=0
for node in "${ran_on[@]}"; do [[ $node != node-a ]] && remote=$((remote + 1)); done
((remote > 0)) || fail "every job ran on node-a: dispatch to other nodes was not exercised"

# The CLI as globex through node-b: https, and wss for the progress, trusting
# the run's CA; then acme cannot see that job.
cli=target/release/vidpress
VIDPRESS_TOKEN=${key[globex]} "$cli" submit "$work/clip.mp4" --wait -o "$work/cli.mp4" \
    --server "${url[node-b]}" --ca "$ca" >"$work/cli.out" 2>"$work/cli.err" ||
    fail "vidpress submit --wait as globex through node-b failed: $(tail -5 "$work/cli.err")"
codecs=$(ffprobe -v error -show_entries stream=codec_type,codec_name -of csv=p=0 "$work/cli.mp4" | sort | paste -sd' ')
[[ $codecs == "aac,audio h264,video" ]] || fail "the CLI's download has streams '$codecs'"
cli_id=$(grep -Eo '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}' "$work/cli.out" "$work/cli.err" | head -1 | cut -d: -f2)
[[ -n $cli_id ]] || fail "vidpress submit printed no job ID: $(cat "$work/cli.out" "$work/cli.err")"
code=$(api acme -o /dev/null -w '%{http_code}' --max-time 10 "${url[node-c]}/jobs/$cli_id")
[[ $code == 404 ]] || fail "acme's poll of globex's job $cli_id on node-c answered $code, not 404"
say "the CLI (https + wss, --ca, a token) ran job $cli_id for globex through node-b; acme gets 404 for it"

echo "PASS: docker smoke test ($((SECONDS - started)) s): 3 nodes on TLS and API keys ready in ${ready_after} s; plain HTTP unanswered, 401 without a key, a key added by SIGHUP; $jobs jobs of acme submitted to node-a ran on ${ran_on[*]}, polled on node-c, downloaded from node-b (h264 + aac), 404 for globex on every node; the CLI ran one for globex over https/wss"
