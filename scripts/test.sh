#!/usr/bin/env bash
# Installs what is missing, then runs every test: the workspace's (nextest),
# the OpenAPI conformance run against a live node (schemathesis, under a
# minute), then the Docker suites, the three-node smoke test and the
# fault-injection suite (about 10 minutes). Arguments are passed to nextest
# and skip the rest (a filtered run); VIDPRESS_SKIP_DOCKER=1 skips the Docker
# suites only.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo nextest run --workspace --all-targets --no-fail-fast "$@"
if [ $# -gt 0 ]; then
    exit 0
fi
# The probe fuzz target for a bounded time (VIDPRESS_FUZZ_SECS, default 60).
scripts/fuzz.sh
scripts/openapi-test.sh
if [ "${VIDPRESS_SKIP_DOCKER:-0}" = 1 ]; then
    exit 0
fi
docker/smoke-test.sh
docker/fault-test.sh
