#!/usr/bin/env bash
# Installs what is missing, then runs every test: the workspace's (nextest),
# then the Docker suites, the three-node smoke test and the fault-injection
# suite (about 7 minutes). Arguments are passed to nextest and skip the
# Docker suites (a filtered run), as does VIDPRESS_SKIP_DOCKER=1.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo nextest run --workspace --all-targets --no-fail-fast "$@"
if [ $# -gt 0 ] || [ "${VIDPRESS_SKIP_DOCKER:-0}" = 1 ]; then
    exit 0
fi
docker/smoke-test.sh
docker/fault-test.sh
