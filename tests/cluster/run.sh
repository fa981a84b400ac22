#!/usr/bin/env bash
# Runs the cluster tests (tests/cluster): one redis-server, three bayeux-server nodes joined by it
# and nginx in front, on loopback ports, driven by the official CometD JavaScript client (Node).
# Installs Debian's redis-server and nginx when missing (scripts/cluster-deps.sh), and the npm
# packages of tests/interop when missing. Builds nothing: the server binary must be built with
# the Redis backplane (the --redis option).
#
#   BAYEUX_SERVER_BIN=target/release/bayeux-server tests/cluster/run.sh [extra node --test args]
#
# Every process it starts is killed by PID; the whole run is bounded to 180 s.
# Optional: BAYEUX_SERVER_LOG=1 (echo node output), BAYEUX_CLIENT_LOG=debug (client log).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

source "$root/scripts/lib.sh"
require_server_bin
if ! "$BAYEUX_SERVER_BIN" --help 2>/dev/null | grep -q -- '--redis'; then
    echo "run.sh: $BAYEUX_SERVER_BIN has no --redis option (built without the Redis backplane?)" >&2
    exit 2
fi

bash "$root/scripts/cluster-deps.sh"
export PATH="$PATH:/usr/sbin:/sbin"

if [ ! -d "$root/tests/interop/node_modules/cometd" ] || [ ! -d "$root/tests/interop/node_modules/cometd-nodejs-client" ]; then
    BAYEUX_SKIP_BROWSER=1 bash "$root/scripts/install-test-deps.sh"
fi

cd "$here"
flags=(--test --test-concurrency=1)
if node --help 2>/dev/null | grep -q -- '--test-force-exit'; then
    flags+=(--test-force-exit)
fi
exec timeout --kill-after=10 180 node "${flags[@]}" "$@" ./cluster.test.mjs
