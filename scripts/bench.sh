#!/usr/bin/env bash
# Installs what is missing (wrk besides the build dependencies), builds the
# release binary and the harness, and runs every benchmark: each figure a
# ratio against a baseline measured in the same run. The report goes to
# target/bench/report.md and target/bench/report.json. Arguments go to
# vidpress-bench (e.g. --only poll --seconds 5; --only codecs --codecs-runs 2
# --codecs h264,h265 for the codecs comparison, whose closing-note table
# goes to target/bench/codecs.md).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
if ! command -v wrk >/dev/null; then
    echo "installing: wrk" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi
cargo build --release --bin vidpress
cargo build --release -p vidpress-bench
# 64 connections per side, and the harness's own sockets.
ulimit -n 65536 2>/dev/null || true
exec target/release/vidpress-bench "$@"
