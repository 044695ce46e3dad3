# bench/lib/relay.sh -- sourced by bench/run.sh. The system under test: `trackrelay serve`.
#
# One `serve` with all its parts (SMTP, hits, admin; delivery in its child process) on loopback ports,
# delivering upstream to the bench's smtp-sink. Its store is SQLite (a file under
# $WORK/relay/sqlite) or the bench's private PostgreSQL; with STORE=both the bench switches
# between the two relays (relay_select, then relay_start the first time, relay_launch after),
# one running at a time on the same ports, each with its own config, log and store.
# smtp-source cannot AUTH, so 127.0.0.0/8 is a trusted network: the mail belongs to the
# user owning MAIL FROM ($BENCH_FROM), created here. The rate limit is off (0).
# Tracking is switched per run with the user's policy (relay_policy off|always): the
# same message bytes go to every target.

RELAY_KIND=""   # sqlite | postgresql: the store of the relay selected
RELAY_DIR=""
RELAY_CONF=""
RELAY_STORE=""  # what bench/lib/hits.py reads: the SQLite file, or PostgreSQL's URL
RELAY_PID=""
RELAY_PARTS=()  # with SPLIT=1: the delivery and hits processes beside the SMTP one
RELAY_LOG=""

# relay_select sqlite|postgresql: the relay the functions below start, stop and configure
relay_select() {
  RELAY_KIND=$1
  RELAY_DIR=$WORK/relay/$1
  RELAY_CONF=$RELAY_DIR/trackrelay.toml
  RELAY_LOG=$RELAY_DIR/relay.log
  if [[ $1 == postgresql ]]; then RELAY_STORE=$PG_URL; else RELAY_STORE=$RELAY_DIR/relay.db; fi
}

relay_cli() { "$VENV_BIN/trackrelay" "$@" -c "$RELAY_CONF"; }

relay_start() {
  local smtp_port=$1 http_port=$2 admin_port=$3 sink_port=$4
  local dir=$RELAY_DIR
  mkdir -p "$dir"
  require_free_port "$smtp_port" "relay smtp"
  require_free_port "$http_port" "relay http"
  require_free_port "$admin_port" "relay admin"
  cat >"$RELAY_CONF" <<EOF
# written by trackrelay bench/lib/relay.sh
[smtp]
listen = "127.0.0.1:$smtp_port"
hostname = "bench.local"
trusted_networks = ["127.0.0.0/8"]
rate_limit_per_minute = 0

[upstream]
url = "smtp://127.0.0.1:$sink_port"

[store]
url = "$( [[ $RELAY_KIND == postgresql ]] && echo "$PG_URL" || echo "sqlite:///$RELAY_STORE")"

[http]
listen = "127.0.0.1:$http_port"
public_url = "http://127.0.0.1:$http_port"
# the notify part sends its readers' opens with X-Forwarded-For (else loopback is the sender: "self")
trusted_proxies = ["127.0.0.0/8"]

[notify]
allow_private_targets = true  # the notify part's webhook receiver is on loopback

[admin]
listen = "127.0.0.1:$admin_port"

[tracking]
internal_domains = []
EOF
  if ! relay_cli check-config >"$dir/setup.log" 2>&1; then
    log "relay config refused: $(tail -2 "$dir/setup.log")"; return 1
  fi
  if ! printf '%s\n' "bench-password-1234" | relay_cli user add "$BENCH_FROM" --password-stdin >>"$dir/setup.log" 2>&1; then
    log "relay: cannot create user $BENCH_FROM: $(tail -2 "$dir/setup.log")"; return 1
  fi
  RELAY_SMTP=$smtp_port
  relay_launch
}

# relay_launch: start `trackrelay serve` on the config written by relay_start (also used
# to restart it if something outside the bench stopped it)
relay_launch() {
  local pid
  for pid in "${RELAY_PARTS[@]}"; do stop_pid "$pid" 10; forget_pid "$pid"; done  # a restart starts all parts anew
  RELAY_PARTS=()
  [[ -f $RELAY_LOG ]] && cat "$RELAY_LOG" >>"$RELAY_LOG.old"
  if ! wait_port_free "$RELAY_SMTP" 15; then
    log "relay: something still listens on 127.0.0.1:$RELAY_SMTP"; return 1
  fi
  if [[ ${SPLIT:-0} == 1 ]]; then
    # the scale-out deployment: one process per part, sharing the SQLite store
    RELAY_PID=$(start_bg trackrelay-smtp "$RELAY_LOG" "$VENV_BIN/trackrelay" serve --only smtp -c "$RELAY_CONF")
    RELAY_PARTS=("$(start_bg trackrelay-delivery "$RELAY_LOG.delivery" "$VENV_BIN/trackrelay" serve --only delivery -c "$RELAY_CONF")")
    local i
    for ((i = 1; i <= ${HITS_PROCESSES:-2}; i++)); do  # they share the port (SO_REUSEPORT)
      RELAY_PARTS+=("$(start_bg "trackrelay-hits-$i" "$RELAY_LOG.hits$i" "$VENV_BIN/trackrelay" serve --only hits -c "$RELAY_CONF")")
    done
  else
    RELAY_PID=$(start_bg trackrelay "$RELAY_LOG" "$VENV_BIN/trackrelay" serve -c "$RELAY_CONF")
  fi
  # every part up (its log says so once all its listeners are), and still alive a moment later
  if ! relay_running 30 || ! { sleep 0.5; relay_alive; }; then
    log "relay did not start (smtp 127.0.0.1:$RELAY_SMTP); last log lines:"
    tail -5 "$RELAY_LOG" | sed 's/^/    /' >&2
    return 1
  fi
  log "relay listening, smtp 127.0.0.1:$RELAY_SMTP (pid $RELAY_PID, config $RELAY_CONF)"
}

# relay_policy off|always: tracking for the bench sender's mail (read by the running relay)
relay_policy() {
  relay_cli policy set "$BENCH_FROM" "mode=$1" >>"$RELAY_DIR/setup.log" 2>&1 \
    || { log "relay: policy mode=$1 failed: $(tail -2 "$RELAY_DIR/setup.log")"; return 1; }
}

# relay_running SECONDS: the log says every part is up (after its listeners and serve's
# delivery process, which starts last); fails at once if the relay exits (a taken port, say)
relay_running() {
  local i
  for ((i = 0; i < $1 * 10; i++)); do
    grep -q "trackrelay running" "$RELAY_LOG" && return 0
    relay_alive || return 1
    sleep 0.1
  done
  return 1
}

relay_alive() { [[ -n $RELAY_PID ]] && pid_alive "$RELAY_PID"; }

relay_stop() {
  local pid
  for pid in "${RELAY_PARTS[@]}"; do stop_pid "$pid" 30; forget_pid "$pid"; done
  RELAY_PARTS=()
  [[ -n $RELAY_PID ]] || return 0
  stop_pid "$RELAY_PID" 30
  forget_pid "$RELAY_PID"
  RELAY_PID=""
}
