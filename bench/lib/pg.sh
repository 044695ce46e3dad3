# bench/lib/pg.sh -- sourced by bench/run.sh. A private PostgreSQL for STORE=postgresql.
#
# initdb + pg_ctl in $WORK/pg on a loopback port, as `nobody` when run as root (PostgreSQL
# refuses root). fsync and synchronous_commit stay on: a durable commit before the 250
# is the product's promise, so the bench pays for it as production would.

PG_PID_DIR=""
PG_URL=""

pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }

pg_start() {  # pg_start PORT
  local port=$1 bin dir=$WORK/pg run=()
  bin=$(pg_bin)
  [[ -n $bin && -x $bin/pg_ctl ]] || { log "postgresql is not installed (make bench installs it)"; return 1; }
  require_free_port "$port" "postgresql"
  mkdir -p "$dir"
  if [[ $(id -u) == 0 ]]; then chown nobody "$dir"; run=(runuser -u nobody --); fi
  "${run[@]}" "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 >"$WORK/pg.log" 2>&1 || {
    log "initdb failed: $(tail -1 "$WORK/pg.log")"; return 1; }
  "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
    -o "-h 127.0.0.1 -p $port -k $dir -c max_connections=200 -c shared_buffers=256MB" start >>"$WORK/pg.log" 2>&1 || {
    log "postgresql did not start: $(tail -2 "$dir/server.log")"; return 1; }
  PG_PID_DIR=$dir/data
  "${run[@]}" "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres trackrelay >>"$WORK/pg.log" 2>&1 || {
    log "createdb failed: $(tail -1 "$WORK/pg.log")"; return 1; }
  PG_URL="postgresql://postgres@127.0.0.1:$port/trackrelay"
  log "postgresql listening on 127.0.0.1:$port ($("$bin/postgres" --version))"
}

pg_stop() {
  [[ -n $PG_PID_DIR ]] || return 0
  local run=()
  [[ $(id -u) == 0 ]] && run=(runuser -u nobody --)
  "${run[@]}" "$(pg_bin)/pg_ctl" -D "$PG_PID_DIR" -m fast -w stop >>"$WORK/pg.log" 2>&1 || true
  PG_PID_DIR=""
}
