#!/usr/bin/env bash
# Builds the vidpress Docker image offline, from files on this machine only:
# no registry, no base image (`FROM scratch`).
#
#   docker/build-image.sh        # -> vidpress:local (VIDPRESS_IMAGE to change the tag)
#
# 1. cargo build --release --bin vidpress
# 2. gathers the build context in target/docker:
#      rootfs/    every shared library `ldd` lists for the binary (the dynamic
#                 loader included; symlinks resolved to files under the names
#                 the loader asks for), a minimal /etc (nsswitch.conf, passwd,
#                 group) and an empty /tmp (1777)
#      writable/  /data, to be owned by the unprivileged user 65532
#      app/       /usr/local/bin/vidpress, debug info stripped
#    (the libraries and the binary are separate layers, so a code change
#    rebuilds and stores only the ~13 MB binary layer)
# 3. docker build -f docker/Dockerfile target/docker, then removes the image
#    the tag pointed to before, unless a container still uses it.
#
# Running it again is quick: cargo does nothing when nothing changed, and
# docker is not called when the digest of the gathered files (kept as the
# image label org.vidpress.rootfs-digest) equals the image's.
set -euo pipefail
cd "$(dirname "$0")/.."

image=${VIDPRESS_IMAGE:-vidpress:local}
out=target/docker
bin=target/release/vidpress
uid=65532
started=$SECONDS

say() { printf 'build-image: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

for tool in cargo ldd objcopy docker sha256sum; do
    command -v "$tool" >/dev/null || die "$tool is needed"
done

t=$SECONDS
cargo build --release --bin vidpress
say "cargo build: $((SECONDS - t)) s"

# Stage a fresh context next to the previous one.
stage=$out/.stage
rm -rf "$stage"
mkdir -p "$stage/rootfs/etc" "$stage/rootfs/tmp" "$stage/writable/data" "$stage/app/usr/local/bin"
chmod 1777 "$stage/rootfs/tmp"
chmod 0755 "$stage/writable/data"

# The binary without its line tables (they are for local debugging: 50+ MB).
objcopy --strip-debug "$bin" "$stage/app/usr/local/bin/vidpress"
chmod 0755 "$stage/app/usr/local/bin/vidpress"

# Every shared object the loader will open, as `ldd` resolves them on this
# machine: "name => /path (addr)", the loader as "/lib64/ld-… (addr)", and the
# kernel's vDSO, which has no file.
ldd_out=$(ldd "$bin") || die "ldd failed on $bin"
if grep -q 'not found' <<<"$ldd_out"; then
    die "missing libraries: $(grep 'not found' <<<"$ldd_out" | tr -s ' \t' ' ')"
fi
libs=$(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$ldd_out" | sort -u)
[[ -n $libs ]] || die "ldd listed no libraries"
grep -qx '/lib64/ld-linux-x86-64.so.2' <<<"$libs" || die "ldd did not list the dynamic loader"
count=0
while read -r lib; do
    mkdir -p "$stage/rootfs$(dirname "$lib")"
    cp -L "$lib" "$stage/rootfs$lib"   # -L: the file a symlink (e.g. /etc/alternatives) points to
    chmod 0755 "$stage/rootfs$lib"
    count=$((count + 1))
done <<<"$libs"

# glibc 2.36 has its `files` and `dns` NSS back ends built into libc.so.6, so
# getaddrinfo() resolves compose service names through Docker's resolver
# (/etc/resolv.conf and /etc/hosts are mounted by Docker) with no libnss_*.so;
# nsswitch.conf only pins the order.
cat >"$stage/rootfs/etc/nsswitch.conf" <<'EOF'
passwd: files
group:  files
hosts:  files dns
EOF
cat >"$stage/rootfs/etc/passwd" <<EOF
root:x:0:0:root:/root:/nonexistent
vidpress:x:$uid:$uid:vidpress:/data:/nonexistent
EOF
cat >"$stage/rootfs/etc/group" <<EOF
root:x:0:
vidpress:x:$uid:
EOF

# One digest over the Dockerfile and the gathered files (names, types, modes,
# contents): equal to the image's label means there is nothing to do.
digest=$(
    {
        sha256sum docker/Dockerfile | cut -d' ' -f1
        cd "$stage"
        find . -printf '%y %m %p %l\n' | LC_ALL=C sort
        find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum
    } | sha256sum | cut -d' ' -f1
)
for part in rootfs writable app; do
    rm -rf "${out:?}/$part"
    mv "$stage/$part" "$out/$part"
done
rmdir "$stage"

current=$(docker image inspect -f '{{ index .Config.Labels "org.vidpress.rootfs-digest" }}' "$image" 2>/dev/null || true)
if [[ $current == "$digest" ]]; then
    say "$image is up to date ($count libraries; $((SECONDS - started)) s)"
    exit 0
fi

previous=$(docker image inspect -f '{{ .Id }}' "$image" 2>/dev/null || true)
docker build --label "org.vidpress.rootfs-digest=$digest" -t "$image" -f docker/Dockerfile "$out" >&2
now=$(docker image inspect -f '{{ .Id }}' "$image")
if [[ -n $previous && $previous != "$now" ]]; then
    # The old image is now untagged; drop it unless a container still uses it.
    docker image rm "$previous" >/dev/null 2>&1 || true
fi
size=$(docker image inspect -f '{{ .Size }}' "$image")
say "built $image: $count libraries, $((size / 1000000)) MB, $((SECONDS - started)) s"
