# Steps with time limits, logs and outcomes, for the GPU host's scripts (sourced, not run):
#   RESULTS=DIR [BUDGET_S=480] [ARCHIVE=FILE.tar.gz]; source deploy/gpu/steps.sh
#   step NAME LIMIT_S NEEDS COMMAND...         NEEDS: steps that must have passed, comma-separated ('' for none)
#   serve_step NAME LIMIT_S NEEDS COMMAND...   the launcher in the background, passed once its log says ready
#   serve_stop                                 SIGTERM to the launcher (it stops tritonserver), then its group
# A step that fails or runs out of time is recorded and the caller goes on with the steps that do not need
# it, so that a GPU run always brings something back. Each step's log is RESULTS/NN-NAME.log; its outcome a
# line of RESULTS/steps.tsv (name, ok/failed/timeout/skipped, seconds, note); ARCHIVE is rewritten after every
# step (what comes back when the host is taken away half way).
STOP_RESERVE_S=60  # kept back from the budget so that the server is always stopped cleanly
declare -A STATUS=()
STEP_NUMBER=0
RUN_STARTED=$SECONDS
SERVER_PID=
mkdir -p "$RESULTS"
: > "$RESULTS/steps.tsv"

archive() {
    [ -n "${ARCHIVE:-}" ] || return 0
    mkdir -p "$(dirname "$ARCHIVE")"
    tar czf "$ARCHIVE.partial" -C "$(dirname "$RESULTS")" "$(basename "$RESULTS")" && mv "$ARCHIVE.partial" "$ARCHIVE"
}

record() {  # NAME STATUS SECONDS NOTE
    STATUS[$1]=$2
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$RESULTS/steps.tsv"
    echo "[gpu-run] $1: $2 in $3 s${4:+ ($4)}"
    archive
}

last_line() { grep -v '^[[:space:]]*$' "$1" | tail -n 1 | cut -c1-300; }

# begin NAME LIMIT_S NEEDS: sets LOG and LIMIT, or records the step as skipped and fails
begin() {
    local need left
    STEP_NUMBER=$((STEP_NUMBER + 1))
    LOG=$(printf '%s/%02d-%s.log' "$RESULTS" "$STEP_NUMBER" "$1")
    for need in ${3//,/ }; do
        [ "${STATUS[$need]:-}" = ok ] || { record "$1" skipped 0 "needs $need"; return 1; }
    done
    left=$(( ${BUDGET_S:-86400} - (SECONDS - RUN_STARTED) - STOP_RESERVE_S ))
    [ "$left" -ge 5 ] || { record "$1" skipped 0 "out of time"; return 1; }
    LIMIT=$(( left < $2 ? left : $2 ))
}

step() {
    local name=$1 began=$SECONDS code
    begin "$@" || return 1
    shift 3
    echo "\$ $*" > "$LOG"
    timeout -k 5 "$LIMIT" "$@" >> "$LOG" 2>&1  # timeout signals the command's whole process group
    code=$?
    if [ $code -eq 124 ] || [ $code -eq 137 ]; then
        record "$name" timeout $((SECONDS - began)) "stopped at $LIMIT s"
    elif [ $code -ne 0 ]; then
        record "$name" failed $((SECONDS - began)) "exit $code: $(last_line "$LOG")"
    else
        record "$name" ok $((SECONDS - began)) ""
    fi
    return $code
}

serve_step() {
    local name=$1 began=$SECONDS
    begin "$@" || return 1
    shift 3
    echo "\$ $*" > "$LOG"
    setsid "$@" >> "$LOG" 2>&1 &  # a group of its own: serve_stop kills what is left of it (stubs)
    SERVER_PID=$!
    while [ $((SECONDS - began)) -lt "$LIMIT" ]; do
        tail -n +2 "$LOG" | grep -q "\[serve\] ready:" && { record "$name" ok $((SECONDS - began)) "ready"; return 0; }
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            wait "$SERVER_PID"
            local code=$?
            SERVER_PID=
            record "$name" failed $((SECONDS - began)) "exit $code: $(last_line "$LOG")"
            return 1
        fi
        sleep 0.5
    done
    serve_stop
    record "$name" timeout $((SECONDS - began)) "not ready after $LIMIT s"
    return 1
}

serve_stop() {  # the launcher's exit status (its own exit timeout for tritonserver: 30 s)
    [ -n "$SERVER_PID" ] || return 0
    local pid=$SERVER_PID code=0
    SERVER_PID=
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 90); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -KILL -- "-$pid" 2>/dev/null
    wait "$pid" || code=$?
    return $code
}

stop_step() {  # NAME: serve_stop as a step of its own
    local began=$SECONDS code
    [ "${STATUS[serve]:-}" = ok ] || { record "$1" skipped 0 "needs serve"; return 1; }
    serve_stop
    code=$?
    record "$1" "$([ $code -eq 0 ] && echo ok || echo failed)" $((SECONDS - began)) "the launcher exited with $code"
}

snapshot_gpus() {  # FILE
    if command -v nvidia-smi > /dev/null; then timeout 20 nvidia-smi > "$1" 2>&1
    else echo "nvidia-smi: not found (no NVIDIA driver on this host)" > "$1"; fi
}
