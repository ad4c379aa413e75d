#!/usr/bin/env bash
# Fuzzes the probe path — vidpress_transcode::engine::probe, what opens an
# untrusted upload — for a bounded time: VIDPRESS_FUZZ_SECS seconds
# (default 60). The target (fuzz/, its own crate) runs under libFuzzer,
# which libfuzzer-sys builds from source, on stable Rust; libav's log call
# sites stand in for coverage (see fuzz/src/lib.rs). Seeds are short clips
# the ffmpeg CLI makes, one per container the service reads; the corpus
# libFuzzer grows is kept in target/fuzz/ from one run to the next.
#
# Prints the executions and what was found. A finding (crash, timeout,
# out-of-memory) is copied to tests/corpus/, which the malformed-media test
# (tests/it/corpus.rs) replays through the service, and the script exits 1:
# commit the file with the fix, or as a known case the service survives.
#
# VIDPRESS_FUZZ_JOBS (default 2, this machine's cores: the script runs
# after the tests, alone) sets how many fuzzing processes run at once.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${VIDPRESS_FUZZ_SECS:-60}"
jobs="${VIDPRESS_FUZZ_JOBS:-2}"
work=target/fuzz

for tool in ffmpeg cargo; do
  command -v "$tool" >/dev/null || { echo "fuzz: $tool is missing (scripts/deps.sh installs it)" >&2; exit 1; }
done
# libFuzzer is C++: the cc crate looks for c++, which g++ provides.
command -v c++ >/dev/null || export CXX=clang++

# The main target folder and the tests' profile: the build reuses what the
# workspace's own build made, so only the fuzz crate and a few
# dependencies whose features differ are compiled.
echo "fuzz: building the probe target" >&2
CARGO_TARGET_DIR="$PWD/target" cargo build --quiet --profile test \
  --manifest-path fuzz/Cargo.toml --bin probe
bin="$PWD/target/debug/probe"

mkdir -p "$work/seeds" "$work/corpus" "$work/tmp"
rm -rf "$work/artifacts"
mkdir -p "$work/artifacts"

# Seeds: about a second of 160x120 video with sound, in each container.
seed() {
  local name=$1
  shift
  [ -s "$work/seeds/$name" ] && return
  ffmpeg -hide_banner -loglevel error -y \
    -f lavfi -i testsrc2=size=160x120:rate=15 \
    -f lavfi -i sine=frequency=440:sample_rate=48000 \
    -t 1 -threads 1 -pix_fmt yuv420p -ac 1 "$@" "$work/tmp/$name"
  mv "$work/tmp/$name" "$work/seeds/$name"
}
seed h264-aac.mp4 -c:v libx264 -preset ultrafast -c:a aac -b:a 32k
seed mjpeg-pcm-faststart.mov -c:v mjpeg -q:v 8 -c:a pcm_s16le -movflags +faststart
seed h264-aac.mkv -c:v libx264 -preset ultrafast -c:a aac -b:a 32k
seed vp8-opus.webm -c:v libvpx -deadline realtime -cpu-used 8 -b:v 200k -c:a libopus -b:a 24k
seed mpeg4-mp3.avi -c:v mpeg4 -q:v 5 -c:a libmp3lame -b:a 32k
seed mpeg2-mp2.ts -c:v mpeg2video -q:v 5 -c:a mp2 -b:a 64k
seed h264-aac.flv -c:v libx264 -preset ultrafast -c:a aac -b:a 32k

log="$work/fuzz.log"
echo "fuzz: running for ${secs}s ($jobs process(es)); libFuzzer's log: $log" >&2
set +e
# -timeout: a probe stuck this long is a finding; -rss_limit_mb: so is one
# that grows past it. The input file each run writes goes under $work/tmp.
TMPDIR="$PWD/$work/tmp" "$bin" "$work/corpus" "$work/seeds" \
  -max_total_time="$secs" -timeout=30 -report_slow_units=30 -rss_limit_mb=2048 \
  -max_len=262144 -fork="$jobs" -ignore_crashes=0 \
  -artifact_prefix="$work/artifacts/" -print_final_stats=1 >"$log" 2>&1
status=$?
set -e
rm -f "$work"/tmp/vidpress-fuzz-*.bin

# In fork mode the parent's status lines read "#RUNS: cov: .. ft: .. corp: N/..b exec/s: ..".
last=$(grep -E '^#[0-9]+: ' "$log" | tail -n 1 || true)
runs=$(sed -nE 's/^#([0-9]+): .*/\1/p' <<<"$last")
corpus=$(sed -nE 's/.* corp: ([0-9]+).*/\1/p' <<<"$last")
features=$(sed -nE 's/.* ft: ([0-9]+).*/\1/p' <<<"$last")
took=$(sed -nE 's/^INFO: exiting: .* time: ([0-9]+)s.*/\1/p' "$log" | tail -n 1)
took=${took:-$secs}
rate=$(( ${runs:-0} / (took > 0 ? took : 1) ))

# One bug tends to be found many times over: the five smallest findings go
# to tests/corpus/, the rest stay in $work/artifacts/.
artifacts=$(find "$work/artifacts" -type f -printf '%s %p\n' | sort -n | cut -d' ' -f2-)
count=$(grep -c . <<<"$artifacts" || true)
found=()
for artifact in $(head -n 5 <<<"$artifacts"); do
  name=$(basename "$artifact")
  kind=${name%%-*}
  hash=$(sha256sum "$artifact" | cut -c1-16)
  cp "$artifact" "tests/corpus/fuzz-$kind-$hash.bin"
  found+=("tests/corpus/fuzz-$kind-$hash.bin")
done

echo "fuzz: ${runs:-0} executions in ${took}s (${rate}/s), corpus ${corpus:-?} inputs, ${features:-?} features; findings: $count"
if [ "$count" -gt 0 ]; then
  printf 'fuzz: found %s\n' "${found[@]}"
  echo "fuzz: all $count in $work/artifacts/"
  grep -E 'ERROR|SUMMARY|panicked|==[0-9]+==' "$log" | head -n 40 || true
  exit 1
fi
if [ "$status" -ne 0 ]; then
  echo "fuzz: libFuzzer exited with status $status and no finding; the end of its log:" >&2
  tail -n 30 "$log" >&2
  exit 1
fi
