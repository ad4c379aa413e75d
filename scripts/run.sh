#!/usr/bin/env bash
# Installs what is missing, builds vidpress and runs one node on
# 127.0.0.1:8080 with its data in ./vidpress-data. Extra arguments go to
# `vidpress serve` (see `vidpress serve --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --release --bin vidpress
exec target/release/vidpress serve "$@"
