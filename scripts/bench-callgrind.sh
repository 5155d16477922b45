#!/usr/bin/env bash
# Instructions the server spends on one scenario, by thread kind, counted by
# callgrind (repeatable whatever else the machine is doing). Starts
# `wuyang serve` under valgrind on a fresh data directory, drives it with
# `wuyang bench --target`, and prints the totals of the writer thread and of
# the request threads.
#
#   scripts/bench-callgrind.sh [BINARY] [create|partial|update|upsert] [N]
#
# N counts requests, or for `upsert` the entities loaded by batch upserts of
# 1,000 (the batch-upsert scenario).
#
# Compare two binaries with the same arguments; see docs/benchmarks.md.
set -euo pipefail
. "$(dirname "$0")/bench-lib.sh"
bin=${1:-target/release/wuyang}
scenario=${2:-partial}
n=${3:-10000}
port=${PORT:-1998}
addr=127.0.0.1:$port
dir=$(mktemp -d)
valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$dir/cg.out" \
    "$bin" serve --listen "$addr" --data-dir "$dir/data" > "$dir/serve.log" 2>&1 &
server=$!
trap '[ -n "${KEEP:-}" ] || rm -rf "$dir"' EXIT
wait_for_health "$addr" 0.5 120
case $scenario in
    upsert) size=(--entities "$n") ;;
    *) size=(--requests "$n") ;;
esac
"$bin" bench --target "$addr" --only "$scenario" "${size[@]}" > /dev/null 2>&1
kill -INT $server
wait $server || true
writer=0 requests=0
for f in "$dir"/cg.out-*; do
    report=$(callgrind_annotate --inclusive=yes "$f" 2>/dev/null || true)
    total=$(awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}' <<< "$report")
    [ -n "$total" ] || continue
    if grep -q 'store::sqlite::Writer::' <<< "$report"; then
        writer=$((writer + total))
    elif grep -q 'hyper::proto::h1' <<< "$report"; then
        requests=$((requests + total))
    fi
done
[ -z "${KEEP:-}" ] || echo "kept $dir" >&2
echo "$scenario x $n: writer $writer instructions, request threads $requests"
