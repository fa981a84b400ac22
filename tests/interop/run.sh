#!/usr/bin/env bash
# Runs the CometD JavaScript client interop tests (Node and headless Chromium) against the server
# binary named by BAYEUX_SERVER_BIN. Builds nothing: build the server and run
# scripts/install-test-deps.sh first. All test files run one after the other, bounded to 600 s.
#
#   BAYEUX_SERVER_BIN=target/debug/bayeux-server tests/interop/run.sh [extra node --test args]
#
# Optional: BAYEUX_SKIP_BROWSER=1 (skip the browser tests), BAYEUX_SERVER_LOG=1 (echo server
# output), BAYEUX_SERVER_ARGS="..." (extra server arguments), BAYEUX_CLIENT_LOG=debug (client log).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

source "$here/../../scripts/lib.sh"
require_server_bin

if [ ! -d "$here/node_modules/cometd" ] || [ ! -d "$here/node_modules/playwright-core" ]; then
    echo "run.sh: tests/interop/node_modules is missing: run scripts/install-test-deps.sh" >&2
    exit 2
fi

cd "$here"
flags=(--test --test-concurrency=1)
# Do not let a lingering client timer keep a finished test file alive (node >= 20.14).
if node --help 2>/dev/null | grep -q -- '--test-force-exit'; then
    flags+=(--test-force-exit)
fi
exec timeout --kill-after=10 600 node "${flags[@]}" "$@" ./*.test.mjs
