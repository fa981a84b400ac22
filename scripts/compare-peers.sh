#!/usr/bin/env bash
# Runs the same load matrix against our server and two other Bayeux servers from the npm
# registry, one server at a time with identical parameters, and writes the results:
#   benches/results/results.jsonl   one JSON line per run
#   benches/results/results.md      the Markdown table, the targets check, links to the plots
#   benches/results/*.svg           throughput against subscribers, latency against offered rate
#
# The peers: Faye (npm `faye`, NodeAdapter: WebSocket + long-polling) and cometd-nodejs-server
# (long-polling only), started by scripts/peers/*.js on 127.0.0.1. Every run gets a freshly
# started server, so peak RSS and memory per session are per run.
#
# Usage: scripts/compare-peers.sh [--quick] [--duration SECS] [--servers "bayeux-server faye cometd-nodejs"]
#                                 [--out DIR]
#   --quick       smaller sizes and 3 s runs (a check that everything works, not a measurement)
#   --duration    seconds of publishing per run (default 10)
#   --servers     which servers to measure (default: all three)
#   --out         output directory (default benches/results)
# Environment: CARGO_TARGET_DIR (default target) for the release build of bayeux-server and
# bayeux-bench. This is a separate command on purpose: it takes minutes and loads the machine;
# `cargo test` runs only the generator's smoke test.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
peers="$root/scripts/peers"
out="$root/benches/results"
duration=10
quick=0
servers="bayeux-server faye cometd-nodejs"
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) quick=1; duration=3 ;;
        --duration) duration="$2"; shift ;;
        --servers) servers="$2"; shift ;;
        --out) out="$2"; shift ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "compare-peers: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

log() { printf 'compare-peers: %s\n' "$*" >&2; }

# 10,000 idle sessions need as many sockets on each side.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# --- builds and installs ------------------------------------------------------------------------
target_dir="${CARGO_TARGET_DIR:-$root/target}"
log "building bayeux-server and bayeux-bench (release) in $target_dir"
(cd "$root" && CARGO_TARGET_DIR="$target_dir" cargo build --release -q -p bayeux-server -p bayeux-benches --bins)
server_bin="$target_dir/release/bayeux-server"
bench="$target_dir/release/bayeux-bench"

if [[ " $servers " == *" faye "* || " $servers " == *" cometd-nodejs "* ]]; then
    command -v node >/dev/null || { log "node is required for the peers"; exit 1; }
    stamp="$peers/node_modules/.install-stamp"
    want="$(cat "$peers/package.json" "$peers/package-lock.json" | sha256sum | cut -d' ' -f1)"
    if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
        log "npm ci in scripts/peers"
        (cd "$peers" && npm ci --no-audit --no-fund --loglevel=error)
        printf '%s\n' "$want" > "$stamp"
    fi
fi

# --- servers ------------------------------------------------------------------------------------
pid=""
url=""
logf="$(mktemp)"
start_server() {
    local name="$1"
    : > "$logf"
    case "$name" in
        bayeux-server) "$server_bin" --listen 127.0.0.1:0 --log-level warn > "$logf" 2>/dev/null & ;;
        faye) node "$peers/faye-server.js" 0 > "$logf" 2>/dev/null & ;;
        cometd-nodejs) node "$peers/cometd-server.js" 0 > "$logf" 2>/dev/null & ;;
        *) log "unknown server $name"; exit 2 ;;
    esac
    pid=$!
    for _ in $(seq 1 100); do
        if grep -q "listening on" "$logf"; then break; fi
        sleep 0.1
    done
    url="$(sed -nE 's/.*listening on ([^ ]+) \(Bayeux endpoint ([^)]+)\).*/\1\2/p' "$logf" | head -1)"
    if [ -z "$url" ]; then
        log "$name did not start"
        stop_server
        exit 1
    fi
}
stop_server() {
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        pid=""
    fi
}
trap 'stop_server; rm -f "$logf"' EXIT

transports_of() {
    case "$1" in
        cometd-nodejs) echo "lp" ;;
        *) echo "ws lp" ;;
    esac
}

# --- the matrix ---------------------------------------------------------------------------------
if [ "$quick" = 1 ]; then
    ws_sizes="100 1000"; ws_rates="10000 50000"; lp_subs=50; lp_rates="5000"
    channels=500; idle=1000; churn_workers=16
else
    ws_sizes="100 1000 10000"; ws_rates="10000 50000 100000 200000"; lp_subs=200; lp_rates="10000 50000"
    channels=2000; idle=10000; churn_workers=32
fi
d="$duration"
matrix() {
    local t="$1"
    if [ "$t" = ws ]; then
        for s in $ws_sizes; do echo "fanout --transport ws --subscribers $s --publishers 4 --inflight 32 --duration $d"; done
        for r in $ws_rates; do echo "fanout --transport ws --subscribers 1000 --publishers 4 --inflight 64 --delivery-rate $r --duration $d"; done
        # The small window: one publisher, at most 25 messages in flight (one write per delivery,
        # what a notification server mostly sees).
        echo "fanout --transport ws --subscribers 1000 --publishers 1 --inflight 25 --duration $d"
    else
        echo "fanout --transport lp --subscribers $lp_subs --publishers 4 --inflight 32 --duration $d"
        for r in $lp_rates; do echo "fanout --transport lp --subscribers $lp_subs --publishers 4 --inflight 64 --delivery-rate $r --duration $d"; done
        echo "fanout --transport lp --subscribers $lp_subs --publishers 1 --inflight 25 --duration $d"
    fi
    echo "channels --transport $t --subscribers $channels --publishers 4 --inflight 64 --duration $d"
    echo "channels --transport $t --subscribers $channels --publishers 1 --inflight 25 --duration $d"
    echo "churn --transport $t --workers $churn_workers --duration $d"
    echo "idle --transport $t --sessions $idle --hold 5"
}

mkdir -p "$out"
results="$out/results.jsonl"
: > "$results"
for server in $servers; do
    for t in $(transports_of "$server"); do
        while read -r run; do
            [ -n "$run" ] || continue
            start_server "$server"
            log "$server: $run"
            # shellcheck disable=SC2086
            if ! "$bench" $run --url "$url" --server-pid "$pid" --label "$server" \
                --json-out "$results" --no-progress > /dev/null; then
                log "$server: run failed: $run"
            fi
            stop_server
        done < <(matrix "$t")
    done
done

"$bench" report --input "$results" --out-dir "$out"
log "wrote $out/results.md and the plots in $out"
