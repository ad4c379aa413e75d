#!/usr/bin/env bash
# Installs what vidpress needs to build and test on Debian 12, only what is
# missing, so a second run is quick: the libav* 5.1 headers, clang and
# pkg-config for ffmpeg-next, the ffmpeg CLI for test fixtures, python3 and
# curl for the Docker suites, chromium and its chromedriver for the web
# page's browser tests, python3-venv for the OpenAPI conformance run
# (scripts/openapi-test.sh installs its pinned schemathesis into a venv),
# g++ for libFuzzer (scripts/fuzz.sh builds it from source), openssl for the
# certificates of the Docker deployment and the benchmarks, jq for the
# smoke test, cargo-nextest.
# (Docker itself is not installed here: the Docker suites need an engine
# already running.)
set -euo pipefail

packages=(
  libavcodec-dev libavformat-dev libavutil-dev libavfilter-dev libavdevice-dev
  libswscale-dev libswresample-dev clang pkg-config ffmpeg python3 python3-venv curl
  chromium chromium-driver g++ openssl jq
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null; then
  echo "cargo is missing: install Rust from https://rustup.rs first" >&2
  exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest" >&2
  cargo install --locked cargo-nextest
fi
