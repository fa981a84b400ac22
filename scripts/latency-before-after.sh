#!/usr/bin/env bash
# Latency where it is meaningful on a 2-core machine shared by the generator and the server:
# p50/p99 at fixed offered rates (with the load average), and one subscriber at a low rate (the
# floor). Runs each scenario against two server binaries, alternating, and appends the JSON lines
# to OUT (default benches/results/latency.jsonl); `bayeux-bench report` turns them into a table.
#
#   scripts/latency-before-after.sh BEFORE_BIN AFTER_BIN [OUT]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
before="$1"; after="$2"; out="${3:-$root/benches/results/latency.jsonl}"
bench="$root/target/release/bayeux-bench"
: > "$out"
runs=(
  "fanout --transport ws --subscribers 1000 --publishers 4 --inflight 64 --delivery-rate 20000"
  "fanout --transport ws --subscribers 1000 --publishers 4 --inflight 64 --delivery-rate 100000"
  "fanout --transport lp --subscribers 200 --publishers 4 --inflight 64 --delivery-rate 20000"
  "fanout --transport lp --subscribers 200 --publishers 4 --inflight 64 --delivery-rate 100000"
  "fanout --transport ws --subscribers 1 --publishers 1 --inflight 1 --rate 100"
  "fanout --transport lp --subscribers 1 --publishers 1 --inflight 1 --rate 100"
)
for run in "${runs[@]}"; do
  for label in before after; do
    bin="$before"; [ "$label" = after ] && bin="$after"
    # shellcheck disable=SC2086
    "$bench" $run --duration 10 --spawn --server-bin "$bin" --label "$label" \
      --json-out "$out" --no-progress > /dev/null
  done
done
"$bench" report --input "$out" --out-dir "$(dirname "$out")/latency" --targets-for after > /dev/null
sed -n '/^| server/,/^$/p' "$(dirname "$out")/latency/results.md"
