#!/usr/bin/env bash
# A short, bounded fuzz run for CI: builds every target (cargo-fuzz, `-s none`, so the stable
# toolchain is enough), runs each for ${FUZZ_SECONDS:-60} s starting from its committed seeds,
# and fails on any crash, leak-like timeout or out-of-memory. The seeds are copied into a
# temporary corpus so the committed ones do not grow. Crash inputs land in fuzz/artifacts/.
#
#   FUZZ_SECONDS=30 fuzz/run-ci.sh            # every target
#   FUZZ_SECONDS=30 fuzz/run-ci.sh channel    # some targets
set -euo pipefail

cd "$(dirname "$0")"
seconds="${FUZZ_SECONDS:-60}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

cargo fuzz build -s none

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

failed=()
for t in "${targets[@]}"; do
    corpus="$work/$t"
    mkdir -p "$corpus"
    if [ -d "seeds/$t" ]; then
        find "seeds/$t" -maxdepth 1 -type f ! -name '*.py' -exec cp {} "$corpus/" \;
    fi
    dict=()
    case "$t" in
        decode_batch | http_request) dict=(-dict=dicts/bayeux.dict) ;;
    esac
    echo "== $t: ${seconds}s from $(find "$corpus" -type f | wc -l) seeds"
    if cargo fuzz run -s none "$t" "$corpus" -- \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -print_final_stats=1 "${dict[@]}" >"$work/$t.log" 2>&1; then
        grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$work/$t.log" || true
    else
        echo "!! $t failed:"
        tail -n 60 "$work/$t.log"
        failed+=("$t")
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz targets with crashes: ${failed[*]} (inputs in fuzz/artifacts/)"
    exit 1
fi
echo "fuzz: ${#targets[@]} targets ran ${seconds}s each without a crash"
