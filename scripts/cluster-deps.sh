#!/usr/bin/env bash
# Installs what the cluster tests (tests/cluster) need beyond the interop tests' own dependencies:
# Debian's redis-server and nginx. Does nothing when both are already there; refreshes the
# package lists only when they are missing or an install fails with them. Idempotent.
#
# The packages are only installed, never started as services: the tests start their own
# redis-server and nginx on loopback ports and stop them by PID.
set -euo pipefail

log() { printf 'cluster-deps: %s\n' "$*" >&2; }

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/bin/$1" ]; }

missing=()
have redis-server || missing+=(redis-server)
have redis-cli || missing+=(redis-tools)
have nginx || missing+=(nginx)

if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi

log "installing Debian packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# Package installs must not start the services (a container has no init; a host should not get
# a system-wide nginx on port 80 because of a test): policy-rc.d answers "not allowed" (101).
policy=/usr/sbin/policy-rc.d
own_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
    as_root chmod +x "$policy"
    own_policy=1
fi
cleanup() { if [ "$own_policy" = 1 ]; then as_root rm -f "$policy"; fi; }
trap cleanup EXIT

if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
    as_root apt-get update -qq
fi
if ! as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

for bin in redis-server redis-cli nginx; do
    if ! have "$bin"; then
        log "$bin is still missing after the install"
        exit 1
    fi
done
log "ok: $(redis-server --version | head -n1); $(/usr/sbin/nginx -v 2>&1 || nginx -v 2>&1)"
