#!/usr/bin/env bash
# Three bayeux-server nodes joined by Redis on this machine against one node alone: the fanout
# scenario over WebSocket, at a fixed offered rate and as fast as possible. Subscribers and
# publishers are spread round-robin over the nodes (publisher p on node p % 3), so two thirds of
# the deliveries cross the Redis hop. Reports deliveries per server CPU-second summed over the
# nodes, and latency p50/p99 (in the cluster also split into same-node and cross-node
# deliveries). Writes benches/results/cluster.md; JSON_OUT=FILE also appends the runs' JSON lines.
#
#   scripts/bench-cluster.sh
#   SUBS=300 PUBS=3 DURATION=8 DELIVERY_RATE=30000 scripts/bench-cluster.sh
#
# Everything it starts (redis-server, the servers) is stopped by PID on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

SUBS=${SUBS:-300}
PUBS=${PUBS:-3}
DURATION=${DURATION:-8}
DELIVERY_RATE=${DELIVERY_RATE:-30000}
NODES=3
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN=$TARGET_DIR/release
OUT_DIR=benches/results
MD=$OUT_DIR/cluster.md

cargo build --release -p bayeux-server -p bayeux-benches --bins

WORK=$(mktemp -d)
JSONL=$WORK/runs.jsonl
PIDS=()
cleanup() {
    local p
    for p in "${PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]}"; do
        wait "$p" 2>/dev/null || true
    done
    PIDS=()
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Stops the given PIDs (started by this script) and forgets them.
stop() {
    local p q keep=()
    for p in "$@"; do
        kill "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    for q in "${PIDS[@]}"; do
        for p in "$@"; do [[ $q == "$p" ]] && continue 2; done
        keep+=("$q")
    done
    PIDS=("${keep[@]+"${keep[@]}"}")
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_node NAME [ARGS...]: starts a server, sets NODE_PID and NODE_URL.
STARTED=0
start_node() {
    local name line i
    STARTED=$((STARTED + 1))
    name=$1.$STARTED # a fresh output file each time
    shift
    "$BIN/bayeux-server" --listen 127.0.0.1:0 --log-level warn "$@" \
        >"$WORK/$name.out" 2>"$WORK/$name.err" &
    NODE_PID=$!
    PIDS+=("$NODE_PID")
    for i in $(seq 200); do
        line=$(grep -m1 'listening on ' "$WORK/$name.out" 2>/dev/null || true)
        [[ -n $line ]] && break
        kill -0 "$NODE_PID" 2>/dev/null || { cat "$WORK/$name.err" >&2; echo "$name exited" >&2; exit 1; }
        sleep 0.1
    done
    NODE_URL=$(sed -n 's/.*listening on \(http:[^ ]*\) (Bayeux endpoint \([^)]*\)).*/\1\2/p' <<<"$line")
    [[ -n $NODE_URL ]] || { echo "$name: no listening line" >&2; exit 1; }
}

start_redis() {
    REDIS_PORT=$(free_port)
    redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
        >"$WORK/redis.log" 2>&1 &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    for _ in $(seq 100); do
        redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && return 0
        sleep 0.1
    done
    echo "redis-server did not start" >&2
    cat "$WORK/redis.log" >&2
    exit 1
}

# run LABEL RATE_ARGS...: one fanout run against the nodes in URLS/SPIDS.
run() {
    local label=$1
    shift
    local args=() u p
    for u in "${URLS[@]}"; do args+=(--url "$u"); done
    for p in "${SPIDS[@]}"; do args+=(--server-pid "$p"); done
    echo "== $label $*" >&2
    "$BIN/bayeux-bench" fanout "${args[@]}" --label "$label" --transport websocket \
        --subscribers "$SUBS" --publishers "$PUBS" --duration "$DURATION" --no-progress \
        --json-out "$JSONL" "$@" >/dev/null
}

single() {
    start_node single
    URLS=("$NODE_URL")
    SPIDS=("$NODE_PID")
    run "1 node" "$@"
    stop "$NODE_PID"
}

cluster() {
    local i pids=()
    start_redis
    URLS=()
    SPIDS=()
    for i in $(seq "$NODES"); do
        start_node "node$i" --redis "redis://127.0.0.1:$REDIS_PORT"
        URLS+=("$NODE_URL")
        SPIDS+=("$NODE_PID")
        pids+=("$NODE_PID")
    done
    run "$NODES nodes + Redis" "$@"
    # Redis's own CPU is not in the servers' figures: report it beside them.
    echo "- redis-server CPU over the whole cluster run ${*:-as fast as possible} (setup included): $(awk '{print ($14+$15)/100}' "/proc/$REDIS_PID/stat") s" >>"$WORK/redis-cpu.txt"
    stop "${pids[@]}" "$REDIS_PID"
}

# Interleaved, fresh processes for every run.
single --delivery-rate "$DELIVERY_RATE"
cluster --delivery-rate "$DELIVERY_RATE"
single
cluster

mkdir -p "$OUT_DIR"
[[ -n ${JSON_OUT:-} ]] && cat "$JSONL" >>"$JSON_OUT"

{
    echo "# Three nodes through Redis against one node"
    echo
    echo "Produced by \`scripts/bench-cluster.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores"
    echo "shared by the generator, the servers, redis-server and whatever else runs (see *load*, the"
    echo "1-minute load average at the end of each run). Fanout over WebSocket, $SUBS subscribers and"
    echo "$PUBS publishers, ${DURATION} s per run, sessions spread round-robin over the nodes (publisher"
    echo "*p* on node *p* mod $NODES), so in the cluster 2/3 of the deliveries cross Redis. *per server"
    echo "CPU-s* is deliveries / CPU seconds summed over the bayeux-server processes (redis-server's"
    echo "CPU is not included; it is listed below). *same / cross* split the cluster's latencies"
    echo "by whether the publisher was on the subscriber's node."
    echo
    echo "| setup | offered /s | deliveries /s | per server CPU-s | server CPU (cores) | p50 ms | p99 ms | same-node p50 / p99 ms | cross-node p50 / p99 ms | lost / dup / reord | peak RSS MiB (sum) | generator CPU | load |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|"
    jq -r '
      def ms: (. / 1000 * 100 | round / 100 | tostring);
      def si: if . == null then "–" elif . >= 1e6 then ((. / 1e5 | round) / 10 | tostring) + "M"
              elif . >= 1e3 then ((. / 1e2 | round) / 10 | tostring) + "k" else (. | round | tostring) end;
      def pair(l): if l == null then "–" else (l.p50 | ms) + " / " + (l.p99 | ms) end;
      "| \(.server) | \(.offered_deliveries_per_s | si) | \(.deliveries_per_s | si) | \(.deliveries_per_server_cpu_s | si) | \(.server_cpu_cores // 0 | . * 100 | round / 100) | \(.latency_us.p50 | ms) | \(.latency_us.p99 | ms) | \(pair(.latency_same_node_us)) | \(pair(.latency_cross_node_us)) | \(.lost) / \(.duplicated) / \(.reordered)\(if (.errors // []) | length > 0 then " (\(.errors | length) errors)" else "" end) | \((.server_peak_rss_bytes // 0) / 1048576 | round) | \(.generator_cpu_cores * 100 | round / 100) | \(.load_avg_1m // "–") |"
    ' "$JSONL"
    echo
    jq -rs '
      def ms: (. / 1000 * 100 | round / 100 | tostring);
      (map(select(.target_rate > 0)) | [.[] | select(.nodes == null)][0] as $s | [.[] | select(.nodes != null)][0] as $c |
        "- At the fixed rate, the cluster minus one node: p50 \(($c.latency_us.p50 - $s.latency_us.p50) | ms) ms, p99 \(($c.latency_us.p99 - $s.latency_us.p99) | ms) ms; within the cluster run, cross-node minus same-node: p50 \(($c.latency_cross_node_us.p50 - $c.latency_same_node_us.p50) | ms) ms, p99 \(($c.latency_cross_node_us.p99 - $c.latency_same_node_us.p99) | ms) ms."),
      (map(select(.target_rate == 0)) | [.[] | select(.nodes == null)][0] as $s | [.[] | select(.nodes != null)][0] as $c |
        "- As fast as possible, deliveries per server CPU-second: cluster / one node = \((($c.deliveries_per_server_cpu_s / $s.deliveries_per_server_cpu_s) * 100 | round) / 100).")
    ' "$JSONL"
    cat "$WORK/redis-cpu.txt"
} >"$MD"

cat "$MD"
echo "wrote $MD${JSON_OUT:+ (JSON lines appended to $JSON_OUT)}" >&2
