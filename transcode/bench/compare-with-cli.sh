#!/bin/sh
# Times the ffmpeg CLI and the transcoding child on the same input with the
# same settings, alternating runs, and prints wall time, user+sys CPU and
# output size for each.
#
#   transcode/bench/compare-with-cli.sh [INPUT] [RUNS]
#
# Without INPUT, makes the reference input: 40 s of 1280x720 testsrc2 + sine.
# Build the child first: cargo build -p vidpress-transcode --release
set -eu
here=$(cd "$(dirname "$0")/../.." && pwd)
child="$here/target/release/vidpress-transcode-child"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
input=${1:-}
runs=${2:-3}
if [ -z "$input" ]; then
    input="$work/in.mp4"
    ffmpeg -v error -y -f lavfi -i testsrc2=size=1280x720:rate=30 \
        -f lavfi -i sine=frequency=440:sample_rate=48000 -t 40 \
        -c:v libx264 -preset medium -crf 18 -c:a aac -b:a 192k "$input"
fi
input=$(cd "$(dirname "$input")" && pwd)/$(basename "$input")

i=1
while [ "$i" -le "$runs" ]; do
    /usr/bin/time -f "cli  wall=%e s cpu=%U+%S s" \
        ffmpeg -v error -y -i "$input" -c:v libx264 -preset veryfast -crf 28 \
        -c:a aac -b:a 96k -movflags +faststart "$work/cli.mp4"
    echo "cli  bytes=$(stat -c %s "$work/cli.mp4")"
    /usr/bin/time -f "ours wall=%e s cpu=%U+%S s" \
        "$child" "{\"input\":\"$input\",\"output\":\"$work/ours.mp4\",\"options\":{}}" >/dev/null
    echo "ours bytes=$(stat -c %s "$work/ours.mp4")"
    if cmp -s "$work/cli.mp4" "$work/ours.mp4"; then echo "outputs identical"; else echo "outputs differ"; fi
    i=$((i + 1))
done
