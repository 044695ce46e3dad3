# bench/lib/common.sh -- sourced by bench/run.sh (not executable on its own).
#
# Process and port helpers. Every background process the bench starts is recorded in
# $WORK/pids (one "PID NAME" per line) and stopped by PID in cleanup_all (run.sh traps
# EXIT/INT/TERM). Nothing is ever killed by name.

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# start_bg NAME LOGFILE CMD... : start CMD in the background, remember its PID, echo it.
start_bg() {
  local name=$1 logfile=$2; shift 2
  "$@" >"$logfile" 2>&1 </dev/null 9>&- &  # fd 9 is run.sh's lock: not for children
  local pid=$!
  echo "$pid $name" >>"$WORK/pids"
  echo "$pid"
}

# pid_alive PID: running (an exited process not yet reaped, state Z, counts as gone)
pid_alive() {
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z && $state != X ]]
}

# stop_pid PID [TIMEOUT_S]: SIGTERM that PID, wait, SIGKILL if it lingers.
stop_pid() {
  local pid=$1 t=${2:-15} i
  pid_alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < t * 10; i++)); do
    pid_alive "$pid" || return 0
    sleep 0.1
  done
  log "pid $pid did not stop in ${t}s: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
}

# forget_pid PID: drop it from the cleanup list (after it was stopped on purpose)
forget_pid() {
  [[ -f $WORK/pids ]] || return 0
  awk -v p="$1" '$1 != p' "$WORK/pids" >"$WORK/pids.tmp" && mv "$WORK/pids.tmp" "$WORK/pids"
}

# port_listening PORT: true if something accepts TCP on 127.0.0.1:PORT
port_listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_port PORT [TIMEOUT_S] [PID]: wait until 127.0.0.1:PORT accepts; fail early if PID died
wait_port() {
  local port=$1 t=${2:-20} pid=${3:-} i
  for ((i = 0; i < t * 10; i++)); do
    port_listening "$port" && return 0
    if [[ -n $pid ]] && ! pid_alive "$pid"; then return 1; fi
    sleep 0.1
  done
  return 1
}

# wait_port_free PORT [TIMEOUT_S]: wait until nothing accepts on 127.0.0.1:PORT
wait_port_free() {
  local port=$1 t=${2:-15} i
  for ((i = 0; i < t * 10; i++)); do
    port_listening "$port" || return 0
    sleep 0.1
  done
  return 1
}

# require_free_port PORT NAME: refuse to start if someone else already listens there
require_free_port() {
  if port_listening "$1"; then
    die "port $1 ($2) is already in use on 127.0.0.1; set BASE_PORT to another range"
  fi
}

cleanup_all() {
  local rc=$?
  trap - EXIT INT TERM
  [[ -n ${WORK:-} && -d $WORK ]] || exit "$rc"
  # servers with their own stop command first (they signal their own master PID)
  declare -F postfix_stop >/dev/null && postfix_stop
  declare -F nginx_stop >/dev/null && nginx_stop
  if [[ -f $WORK/pids ]]; then
    local pid name
    # newest first: the relay before the sink it delivers to
    while read -r pid name; do
      [[ -n $pid ]] || continue
      if pid_alive "$pid"; then log "stopping $name (pid $pid)"; stop_pid "$pid" 30; fi
    done < <(tac "$WORK/pids")
    rm -f "$WORK/pids"
  fi
  declare -F pg_stop >/dev/null && pg_stop  # last: the relay processes above used it
  exit "$rc"
}
