# Shared by the scripts/bench-*.sh measurements (sourced, not run).

# Waits until the server at $1 (host:port) answers /health, polling every
# $2 seconds at most $3 times.
wait_for_health() {
    for _ in $(seq 1 "$3"); do
        curl -s -o /dev/null "http://$1/health" && return 0
        sleep "$2"
    done
    echo "no server answered at $1" >&2
    return 1
}
