#!/usr/bin/env bash
# Holds a live node to its own OpenAPI document with schemathesis: starts
# `vidpress serve` on a loopback port with a throwaway data directory and
# `--api-keys` (one admin key, generated for the run, so /metrics and
# /cluster answer too), gives it a completed, a canceled and a failed job
# (so that listings, polls and downloads answer with real documents and
# bytes), then runs schemathesis against GET /openapi.json with the key
# (the spec's `bearer` scheme, `[auth.openapi.bearer]`) and the checks and
# exceptions of scripts/schemathesis.toml and the hook of
# scripts/schemathesis_hooks.py (POST /jobs' rules across parameters, which
# OpenAPI cannot state, applied to requests generated as valid); `ignored_auth` sends each keyed
# operation again without the key and with a wrong one, which must get 401.
# Bounded in examples and time; prints schemathesis' summary; exits
# non-zero on any failure.
#
# schemathesis (pinned) is installed from PyPI into a venv under
# ~/.cache/vidpress the first time, and reused after. Needs python3 with
# venv, curl and the ffmpeg CLI (scripts/deps.sh installs them).
# VIDPRESS_OPENAPI_EXAMPLES sets the examples per operation (default 300),
# VIDPRESS_OPENAPI_SEED a seed to replay a run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

version=4.32.5
venv="${XDG_CACHE_HOME:-$HOME/.cache}/vidpress/schemathesis-$version"
if ! "$venv/bin/schemathesis" --version >/dev/null 2>&1; then
    echo "installing schemathesis $version into $venv" >&2
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi

cargo build --quiet -p vidpress --bin vidpress
vidpress="$root/target/debug/vidpress"

work=$(mktemp -d)
node_pid=""
cleanup() {
    if [ -n "$node_pid" ]; then
        kill "$node_pid" 2>/dev/null || true
        wait "$node_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# A throwaway admin key; schemathesis reads it from the environment.
token="openapi-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
(umask 077 && printf 'openapi:%s:admin\n' "$token" >"$work/keys")
export VIDPRESS_OPENAPI_TOKEN="$token"
auth=(-H "Authorization: Bearer $token")

# Port 0: the node picks a free port and logs it.
"$vidpress" serve --http 127.0.0.1:0 --data-dir "$work/data" --log-format json \
    --api-keys "$work/keys" 2>"$work/node.log" &
node_pid=$!
base=""
for _ in $(seq 100); do
    addr=$(grep -o '"http":"127\.0\.0\.1:[0-9]*"' "$work/node.log" | head -n 1 | cut -d'"' -f4 || true)
    if [ -n "$addr" ] && curl -sf "http://$addr/readyz" >/dev/null; then
        base="http://$addr"
        break
    fi
    kill -0 "$node_pid" 2>/dev/null || break
    sleep 0.1
done
if [ -z "$base" ]; then
    echo "openapi-test: the node did not become ready" >&2
    cat "$work/node.log" >&2
    exit 1
fi

# Real jobs for the fuzzer to find through GET /jobs.
ffmpeg -hide_banner -loglevel error -f lavfi -i testsrc2=size=320x240:rate=25 \
    -f lavfi -i sine=frequency=440 -t 1 -c:v libx264 -preset ultrafast -c:a aac \
    -pix_fmt yuv420p "$work/clip.mp4"
# An MP4 signature, then nothing a demuxer can read: accepted, then failed.
{ printf '\0\0\0\040ftypisom'; head -c 400 /dev/zero; } >"$work/broken.mp4"
submit() {
    curl -sf "${auth[@]}" --data-binary "@$1" "$base/jobs?$2" |
        grep -o '"id":"[^"]*"' | cut -d'"' -f4
}
completed=$(submit "$work/clip.mp4" "preset=ultrafast")
canceled=$(submit "$work/clip.mp4" "crf=40")
curl -sf "${auth[@]}" -X DELETE "$base/jobs/$canceled" >/dev/null
failed=$(submit "$work/broken.mp4" "")
for id in "$completed" "$canceled" "$failed"; do
    for _ in $(seq 600); do
        code=$(curl -s "${auth[@]}" -o /dev/null -w '%{http_code}' "$base/jobs/$id")
        [ "$code" != 202 ] && break
        sleep 0.1
    done
done
curl -sf "${auth[@]}" "$base/jobs/$completed" >/dev/null || {
    echo "openapi-test: the seed job did not complete" >&2
    exit 1
}

# schemathesis keeps its example database in the working directory.
seed=()
[ -n "${VIDPRESS_OPENAPI_SEED:-}" ] && seed=(--seed "$VIDPRESS_OPENAPI_SEED")
status=0
(
    cd "$work"
    PYTHONPATH="$root/scripts" SCHEMATHESIS_HOOKS=schemathesis_hooks \
        timeout 300 "$venv/bin/schemathesis" --no-color \
        --config-file "$root/scripts/schemathesis.toml" \
        run "$base/openapi.json" \
        --max-examples "${VIDPRESS_OPENAPI_EXAMPLES:-300}" \
        --request-timeout 10 \
        "${seed[@]}"
) >"$work/schemathesis.log" 2>&1 || status=$?
if [ "$status" -ne 0 ]; then
    cat "$work/schemathesis.log"
    [ "$status" -eq 124 ] && echo "openapi-test: schemathesis did not end within 300 s" >&2
else
    # From the summary on: phases, warnings, test cases and the closing line.
    sed -n '/^=* SUMMARY =*$/,$p' "$work/schemathesis.log"
fi
kill -0 "$node_pid" 2>/dev/null || {
    echo "openapi-test: the node died during the run" >&2
    tail -n 50 "$work/node.log" >&2
    status=1
}
exit "$status"
