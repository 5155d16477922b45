#!/usr/bin/env bash
# The server's CPU time per request for one write or query scenario: a
# steadier measure than throughput on a shared machine. Starts `wuyang serve`
# on its own (a fresh data directory), drives it with `wuyang bench --target`,
# and reads user + system time of every server thread (and of the writer
# alone) from /proc before and after the measured run.
#
#   scripts/bench-cpu.sh [BINARY] [create|partial|update|query] [REQUESTS]
#
# Alternate two binaries (e.g. the one before and after a change) a few times;
# see docs/benchmarks.md.
set -euo pipefail
. "$(dirname "$0")/bench-lib.sh"
bin=${1:-target/release/wuyang}
scenario=${2:-partial}
n=${3:-30000}
port=${PORT:-1996}
addr=127.0.0.1:$port
dir=$(mktemp -d)
"$bin" serve --listen "$addr" --data-dir "$dir" > "$dir.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$dir" "$dir.log"' EXIT
wait_for_health "$addr" 0.1 100
bench() { "$bin" bench --target "$addr" --entities 100000 "$@" 2>&1; }
case $scenario in
    # The dataset and the attribute indexes, outside the measured run.
    query) bench --only upsert > /dev/null; bench --only query --requests 3000 > /dev/null ;;
    # The 1,000 entities the update scenarios change.
    partial | update) bench --only "$scenario" --requests 2000 > /dev/null ;;
esac
ticks=$(getconf CLK_TCK)
snapshot() {
    local total=0 writer=0
    for task in /proc/$server/task/*; do
        read -r -a f < "$task/stat"
        local t=$((f[13] + f[14]))
        total=$((total + t))
        [ "$(cat "$task/comm")" = wuyang-writer ] && writer=$t
    done
    echo "$total $writer"
}
read -r t0 w0 < <(snapshot)
row=$(bench --only "$scenario" --requests "$n" | grep -E '^\| (create|partial|update|query)' | awk -F'|' '{print $3}' | tr -s ' ')
read -r t1 w1 < <(snapshot)
echo "$scenario: $row; server CPU $(((t1 - t0) * 1000000 / ticks / n)) µs a request, writer $(((w1 - w0) * 1000000 / ticks / n)) µs"
