#!/usr/bin/env bash
# The whole test suite, as CI runs it. Installs what the tests need when it is missing
# (Node packages for the CometD JavaScript client, Debian's Chromium, cargo-fuzz, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
step() { printf '\n==> %s (%ss)\n' "$*" "$(( $(date +%s) - start ))"; }

step "installing test dependencies"
bash scripts/install-test-deps.sh
bash scripts/cluster-deps.sh

step "format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy -p bayeux-core --features model-check --all-targets -- -D warnings

step "bayeux-server: every combination of its features (redis, voice, tls, jemalloc)"
# Each optional part must build alone and without the others; warnings are errors.
for redis in "" redis; do for voice in "" voice; do for tls in "" tls; do for alloc in "" jemalloc; do
  features="$(echo $redis $voice $tls $alloc | tr ' ' ',')"
  echo "features: [${features}]"
  cargo clippy -q -p bayeux-server --no-default-features --features "$features" -- -D warnings
done; done; done; done
cargo clippy -q -p bayeux-server --no-default-features --all-targets -- -D warnings

step "documentation (rustdoc warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps

step "unit, integration, property and abuse tests"
# Tests that need an external program (redis-server) fail here rather than print "skipped:".
BAYEUX_REQUIRE_EXTERNAL=1 cargo test --workspace
# The session state machine under shuttle's schedulers (a test-only feature of the core).
cargo test -p bayeux-core --features model-check --lib model_check
# The in-process example asserts what it prints: run it so it cannot rot.
cargo run -q -p bayeux-core --example in_process > /dev/null

step "interop: the official CometD JavaScript client (Node and headless Chromium)"
cargo build -p bayeux-server
# remote_calls.test.mjs runs this example (found beside the server binary).
cargo build -p bayeux-transport --example remote_calls
BAYEUX_SERVER_BIN="$PWD/target/debug/bayeux-server" bash tests/interop/run.sh

step "scale-out: three nodes, Redis and nginx, with the CometD JavaScript client"
BAYEUX_SERVER_BIN="$PWD/target/debug/bayeux-server" bash tests/cluster/run.sh

if [ -f fuzz/run-ci.sh ] && [ "${SKIP_FUZZ:-0}" != 1 ]; then
  step "bounded fuzzing (${FUZZ_SECONDS:-60}s per target)"
  bash fuzz/run-ci.sh
fi

step "all tests passed"
