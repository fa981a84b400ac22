#!/usr/bin/env bash
# Installs what the interop tests (tests/interop) need, and nothing when it is all there already:
#   - Debian's chromium (/usr/bin/chromium), for the headless browser tests
#     (skipped when BAYEUX_SKIP_BROWSER=1);
#   - the npm packages of tests/interop (npm ci from package-lock.json), when node_modules is
#     missing or was installed from another package.json / package-lock.json.
# Idempotent. Needs Node.js >= 20 with npm on PATH (the machine's own); uses the package
# registries configured on the machine, by package name only.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
interop="$root/tests/interop"

log() { printf 'install-test-deps: %s\n' "$*" >&2; }

source "$root/scripts/lib.sh"

# --- Node.js -----------------------------------------------------------------------------------
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    log "node and npm are required (Node.js >= 20) but were not found on PATH"
    exit 1
fi
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
    log "Node.js >= 20 is required (found $(node --version))"
    exit 1
fi

# --- Chromium ----------------------------------------------------------------------------------
if [ "${BAYEUX_SKIP_BROWSER:-}" = "1" ]; then
    log "BAYEUX_SKIP_BROWSER=1: not checking for chromium"
elif [ -x /usr/bin/chromium ]; then
    :
else
    log "installing Debian package chromium"
    export DEBIAN_FRONTEND=noninteractive
    # Refresh the package lists only when they are missing or the install fails with them.
    if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
        as_root apt-get update -qq
    fi
    if ! as_root apt-get install -y -qq --no-install-recommends chromium >/dev/null; then
        as_root apt-get update -qq
        as_root apt-get install -y -qq --no-install-recommends chromium >/dev/null
    fi
    if [ ! -x /usr/bin/chromium ]; then
        log "chromium was installed but /usr/bin/chromium is missing"
        exit 1
    fi
fi

# --- openssl (tls.test.mjs makes its test CA with it) -------------------------------------------
if ! command -v openssl >/dev/null 2>&1; then
    log "installing Debian package openssl"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq
    as_root apt-get install -y -qq --no-install-recommends openssl >/dev/null
fi

# --- npm packages ------------------------------------------------------------------------------
stamp="$interop/node_modules/.install-stamp"
want="$(cat "$interop/package.json" "$interop/package-lock.json" 2>/dev/null | sha256sum | cut -d' ' -f1)"
have="$(cat "$stamp" 2>/dev/null || true)"
if [ "$want" != "$have" ] || [ ! -d "$interop/node_modules/cometd" ]; then
    cd "$interop"
    if [ -f package-lock.json ]; then
        log "npm ci in tests/interop"
        npm ci --no-audit --no-fund --loglevel=error
    else
        log "npm install in tests/interop (no package-lock.json)"
        npm install --no-audit --no-fund --loglevel=error
        want="$(cat package.json package-lock.json 2>/dev/null | sha256sum | cut -d' ' -f1)"
    fi
    printf '%s\n' "$want" > "$stamp"
fi
