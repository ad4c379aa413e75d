#!/usr/bin/env bash
# Makes the TLS certificates and API keys of the Docker deployment with the
# host's `openssl`: a private CA, one certificate per node, signed by it, and
# an API key file with an admin key and two tenants' keys.
#
#   docker/make-secrets.sh [DIR]      # default docker/secrets (git-ignored)
#
# Only what is missing is made, so files you put there yourself (your own CA,
# certificates or key file; see docker/README.md) are kept; a node
# certificate is made again when it is not signed by ca.pem, does not name
# its node, does not match its key or expires within 30 days.
#
#   DIR/ca.pem                 the CA's certificate: clients trust it (curl --cacert, vidpress --ca)
#   DIR/ca.key                 the CA's private key: signs node certificates; never given to a node
#   DIR/tokens/{admin,acme,globex}   the plain tokens, one line each, for clients
#   DIR/shared/ca.pem          a copy of ca.pem      } mounted read-only in every node
#   DIR/shared/api-keys        tenant:sha256:<hex>[:admin] lines  } at /run/secrets/shared
#   DIR/node-X/cert.pem        node-X's certificate (serverAuth + clientAuth; SANs node-X,
#                              localhost, 127.0.0.1) } mounted read-only in node-X
#   DIR/node-X/key.pem         its private key (EC P-256, PKCS#8) } at /run/secrets/node
#
# Every file is owner-only (0600, folders 0700). The nodes run as uid 65532,
# so shared/ and node-*/ are then given to 65532:65532, which needs root (or
# a password-less sudo); the rest stays the caller's.
# VIDPRESS_NODES (default "node-a node-b node-c") names the nodes.
set -euo pipefail

dir=${1:-$(dirname "$0")/secrets}
nodes=(${VIDPRESS_NODES:-node-a node-b node-c})
node_uid=65532
ca_days=3650
cert_days=825

say() { printf 'make-secrets: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
# Runs openssl quietly; on failure shows what it said.
ossl() {
    local err
    err=$(openssl "$@" 2>&1 >/dev/null) || die "openssl $1 failed: $err"
}
command -v openssl >/dev/null || die "openssl is needed"

umask 077
mkdir -p "$dir/tokens" "$dir/shared"
chmod 0700 "$dir" "$dir/tokens"
made=()

# The CA: a self-signed certificate that may only sign end-entity ones. A
# CA brought without its key is kept: then every node certificate must be
# brought too.
[[ -s $dir/ca.key && ! -s $dir/ca.pem ]] && die "$dir holds ca.key without ca.pem"
if [[ ! -s $dir/ca.pem ]]; then
    ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/ca.key"
    ossl req -x509 -new -key "$dir/ca.key" -sha256 -days "$ca_days" -out "$dir/ca.pem" \
        -subj "/O=vidpress/CN=vidpress cluster CA $(date -u +%Y-%m-%d)" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash"
    made+=(ca.pem ca.key)
fi
openssl x509 -in "$dir/ca.pem" -noout -checkend $((30 * 86400)) >/dev/null ||
    say "warning: $dir/ca.pem expires within 30 days"

# Each node: one certificate for both the HTTP API (server) and the cluster
# protocol (server and client). Other nodes reach it by its compose service
# name; the host reaches its published port as localhost / 127.0.0.1.
for node in "${nodes[@]}"; do
    nd=$dir/$node
    mkdir -p "$nd"
    if [[ -s $nd/cert.pem && -s $nd/key.pem ]] &&
        openssl verify -CAfile "$dir/ca.pem" -untrusted "$nd/cert.pem" "$nd/cert.pem" >/dev/null 2>&1 &&
        openssl x509 -in "$nd/cert.pem" -noout -checkend $((30 * 86400)) >/dev/null &&
        openssl x509 -in "$nd/cert.pem" -noout -checkhost "$node" | grep -q ' does match' &&
        [[ $(openssl x509 -in "$nd/cert.pem" -noout -pubkey) == $(openssl pkey -in "$nd/key.pem" -pubout 2>/dev/null) ]]; then
        continue
    fi
    [[ -s $dir/ca.key ]] ||
        die "$nd/cert.pem is missing, not signed by ca.pem, not for $node, not for key.pem or expiring, and there is no ca.key to sign a new one"
    ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$nd/key.pem"
    ossl req -new -key "$nd/key.pem" -subj "/O=vidpress/CN=$node" -out "$nd/cert.csr"
    ossl x509 -req -in "$nd/cert.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
        -sha256 -days "$cert_days" -out "$nd/cert.pem" -extfile <(
            printf '%s\n' \
                "basicConstraints=critical,CA:FALSE" \
                "keyUsage=critical,digitalSignature" \
                "extendedKeyUsage=serverAuth,clientAuth" \
                "subjectAltName=DNS:$node,DNS:localhost,IP:127.0.0.1" \
                "subjectKeyIdentifier=hash" \
                "authorityKeyIdentifier=keyid"
        )
    rm -f "$nd/cert.csr" "$dir/ca.srl"
    made+=("${nd#"$dir"/}/cert.pem" "${nd#"$dir"/}/key.pem")
done
cp "$dir/ca.pem" "$dir/shared/ca.pem.new" && mv "$dir/shared/ca.pem.new" "$dir/shared/ca.pem"

# API keys: random tokens (32 bytes, base64url: 43 characters), kept plain
# for clients in tokens/ and only as SHA-256 digests in the nodes' file.
token() { openssl rand -base64 32 | tr '+/' '-_' | tr -d '=\n'; }
if [[ ! -s $dir/shared/api-keys ]]; then
    {
        echo "# vidpress API keys: tenant:token or tenant:token:admin, the token plain or sha256:<hex>."
        echo "# Made by docker/make-secrets.sh; the plain tokens are in ../tokens/. SIGHUP re-reads this file."
        for key in admin:admin acme: globex:; do
            name=${key%%:*}
            role=${key#*:}
            if [[ ! -s $dir/tokens/$name ]]; then
                token >"$dir/tokens/$name"
                echo >>"$dir/tokens/$name"
            fi
            digest=$(tr -d '\n' <"$dir/tokens/$name" | openssl dgst -sha256 -r | cut -d' ' -f1)
            echo "$name:sha256:$digest${role:+:$role}"
        done
    } >"$dir/shared/api-keys.new"
    mv "$dir/shared/api-keys.new" "$dir/shared/api-keys"
    made+=(shared/api-keys tokens/admin tokens/acme tokens/globex)
fi

# Owner-only everywhere; what the nodes read belongs to the user they run as.
find "$dir" -uid "$EUID" \( -type d -exec chmod 0700 {} + -o -type f -exec chmod 0600 {} + \)
node_dirs=("$dir/shared")
for node in "${nodes[@]}"; do node_dirs+=("$dir/$node"); done
if [[ -n $(find "${node_dirs[@]}" ! -uid "$node_uid" -print -quit) ]]; then
    if ((EUID == 0)); then
        chown -R "$node_uid:$node_uid" "${node_dirs[@]}"
    elif sudo -n true 2>/dev/null; then
        sudo -n chown -R "$node_uid:$node_uid" "${node_dirs[@]}"
    else
        die "the nodes run as uid $node_uid and cannot read files owned by uid $EUID: run this as root, or: sudo chown -R $node_uid:$node_uid ${node_dirs[*]}"
    fi
fi
if ((${#made[@]})); then
    say "made in $dir: ${made[*]}"
else
    say "$dir is complete"
fi
