#!/usr/bin/env bash
# Builds the vidpress Docker image offline, from files on this machine only:
# no registry, no base image (`FROM scratch`).
#
#   docker/build-image.sh        # -> vidpress:local (VIDPRESS_IMAGE to change the tag)
#
# 1. cargo build --release --bin vidpress
# 2. gathers into target/docker/rootfs the binary (debug info stripped), every
#    shared library `ldd` lists for it (the dynamic loader included, symlinks
#    resolved to their files under the names the loader asks for), a minimal
#    /etc (nsswitch.conf, passwd, group) and an empty /tmp;
#    /data (owned by the unprivileged user 65532) goes in target/docker/writable
# 3. docker build -f docker/Dockerfile target/docker
#
# Running it again is quick: cargo does nothing when nothing changed, and the
# image is rebuilt only when the digest of the gathered files (kept as the
# image label org.vidpress.rootfs-digest) differs from the image's.
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

cargo build --release --bin vidpress

# Stage a fresh tree next to the previous one.
stage=$out/rootfs.new
rm -rf "$stage" "$out/writable"
mkdir -p "$stage/usr/local/bin" "$stage/etc" "$stage/tmp" "$out/writable/data"
chmod 1777 "$stage/tmp"
chmod 0755 "$out/writable/data"

# The binary without its line tables (they are for local debugging: 40+ MB).
objcopy --strip-debug "$bin" "$stage/usr/local/bin/vidpress"
chmod 0755 "$stage/usr/local/bin/vidpress"

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
    mkdir -p "$stage$(dirname "$lib")"
    cp -L "$lib" "$stage$lib"   # -L: the file a symlink (e.g. /etc/alternatives) points to
    chmod 0755 "$stage$lib"
    count=$((count + 1))
done <<<"$libs"

# glibc 2.36 has its `files` and `dns` NSS back ends built into libc.so.6, so
# getaddrinfo() resolves compose service names through Docker's resolver
# (/etc/resolv.conf and /etc/hosts are mounted by Docker) with no libnss_*.so;
# nsswitch.conf only pins the order.
cat >"$stage/etc/nsswitch.conf" <<'EOF'
passwd: files
group:  files
hosts:  files dns
EOF
cat >"$stage/etc/passwd" <<EOF
root:x:0:0:root:/root:/nonexistent
vidpress:x:$uid:$uid:vidpress:/data:/nonexistent
EOF
cat >"$stage/etc/group" <<EOF
root:x:0:
vidpress:x:$uid:
EOF

# One digest over the Dockerfile and the gathered tree (names, types, modes,
# contents): equal to the image's label means there is nothing to do.
digest=$(
    {
        sha256sum docker/Dockerfile | cut -d' ' -f1
        for dir in "$stage" "$out/writable"; do
            (cd "$dir" && find . -printf '%y %m %p %l\n' | LC_ALL=C sort)
            (cd "$dir" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum)
        done
    } | sha256sum | cut -d' ' -f1
)
rm -rf "$out/rootfs"
mv "$stage" "$out/rootfs"

current=$(docker image inspect -f '{{ index .Config.Labels "org.vidpress.rootfs-digest" }}' "$image" 2>/dev/null || true)
if [[ $current == "$digest" ]]; then
    say "$image is up to date ($count libraries; $((SECONDS - started)) s)"
    exit 0
fi

docker build --label "org.vidpress.rootfs-digest=$digest" -t "$image" -f docker/Dockerfile "$out" >&2
size=$(docker image inspect -f '{{ .Size }}' "$image")
say "built $image: $count libraries, $((size / 1000000)) MB, $((SECONDS - started)) s"
