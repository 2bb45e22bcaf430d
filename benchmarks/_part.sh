# Sourced by run_all.sh and device_checks.sh, which set $log first.
# part NAME SECONDS COMMAND...: run it under a time limit, log its output and how it ended
part() {
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    echo "=== $name (limit ${limit}s): $*" | tee -a "$log"
    timeout -k 5 "$limit" "$@" 2>&1 | tee -a "$log"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc after $((SECONDS - start))s" | tee -a "$log"
}
