#!/usr/bin/env bash
# bench/run.sh [smtp|rewrite|hits|notify|all]...   (default: all; `make bench` runs this)
#
# The relay measured against references started in the same command, on loopback only:
#   smtp     smtp-source -> {smtp-sink alone, private Postfix -> sink, trackrelay -> sink};
#            1 and $CONC sessions with tracking off; then tracking on (the bench user's
#            policy mode=always) with 1 and 3 recipients per mail vs Postfix
#   rewrite  relay.rewrite.rewrite_message vs a bare lxml.html parse+tostring, per message
#   hits     wrk against the relay's pixel and click redirect (recording on) vs nginx,
#            plus events stored vs requests sent
#   notify   wrk drives human opens on the pixel; meanwhile people open other copies for the
#            first time: time from each open to its signed webhook's POST, notices lost, and
#            pixel rps with a webhook vs none
# Prints the results (ratios against the references) and writes bench/results/latest.md.
# See bench/README.md. Everything it starts is stopped by PID on exit; all state is in
# $WORK (default /tmp/trackrelay-bench, wiped at start).
#
# Knobs (environment): N=1000 mails per SMTP run, REPS=5 rounds, CONC=20 sessions,
#   TRACK_CONC=$CONC, E2E_TIMEOUT=180 (s per SMTP run), RUNS=300 rewrite calls per case,
#   DUR=10s CONNS=50 THREADS=2 HTTP_REPS=2 (wrk), BASE_PORT=27500 (uses 6 ports from it),
#   REUSE=1 (smtp-source -d: one connection per session), WORK=/tmp/trackrelay-bench,
#   SPLIT=1 (the relay as separate processes on one store: serve --only smtp, --only delivery,
#   and HITS_PROCESSES=2 x --only hits sharing the public port),
#   STORE=both|sqlite|postgresql (the relay's store; postgresql: a private server started here;
#   both: every relay run once on each, in the same round, and PostgreSQL / SQLite reported).
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$BENCH")
VENV_BIN=${VENV_BIN:-$ROOT/.venv/bin}
PY=$VENV_BIN/python
WORK=${WORK:-/tmp/trackrelay-bench}
N=${N:-1000}
REPS=${REPS:-5}
CONC=${CONC:-20}
TRACK_CONC=${TRACK_CONC:-$CONC}
E2E_TIMEOUT=${E2E_TIMEOUT:-180}
RUNS=${RUNS:-300}
DUR=${DUR:-10s}
CONNS=${CONNS:-50}
THREADS=${THREADS:-2}
HTTP_REPS=${HTTP_REPS:-2}
BASE_PORT=${BASE_PORT:-27500}
BENCH_FROM=news@nordlicht-outdoor.example
BENCH_TO=sanna.virtanen@example.org

SINK_PORT=$BASE_PORT
POSTFIX_PORT=$((BASE_PORT + 1))
RELAY_SMTP_PORT=$((BASE_PORT + 2))
RELAY_HTTP_PORT=$((BASE_PORT + 3))
RELAY_ADMIN_PORT=$((BASE_PORT + 4))
NGINX_PORT=$((BASE_PORT + 5))
PG_PORT=$((BASE_PORT + 6))
STORE=${STORE:-both}

source "$BENCH/lib/common.sh"
source "$BENCH/lib/sink.sh"
source "$BENCH/lib/postfix.sh"
source "$BENCH/lib/nginx.sh"
source "$BENCH/lib/relay.sh"
source "$BENCH/lib/pg.sh"

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

PARTS=()
for arg in "$@"; do
  case $arg in
    smtp | rewrite | hits | notify) PARTS+=("$arg") ;;
    all) PARTS+=(smtp rewrite hits notify) ;;
    -h | --help) usage ;;
    *) echo "unknown part: $arg" >&2; usage ;;
  esac
done
((${#PARTS[@]})) || PARTS=(smtp rewrite hits notify)
want() { [[ " ${PARTS[*]} " == *" $1 "* ]]; }

for v in N REPS CONC TRACK_CONC E2E_TIMEOUT RUNS CONNS THREADS HTTP_REPS BASE_PORT; do
  [[ ${!v} =~ ^[0-9]+$ && ${!v} -ge 1 ]] || die "$v must be a whole number >= 1 (got '${!v}')"
done
case $STORE in
  both) STORES=(sqlite postgresql) ;;
  sqlite | postgresql) STORES=("$STORE") ;;
  *) die "STORE must be both, sqlite or postgresql (got '$STORE')" ;;
esac
[[ $DUR =~ ^[0-9]+s?$ ]] || die "DUR must be seconds, e.g. 10s (got '$DUR')"
((${DUR%s} <= 120)) || die "DUR is capped at 120s"
((N <= 100000 && RUNS <= 100000 && REPS <= 20 && HTTP_REPS <= 20)) || die "N/RUNS/REPS out of range"
[[ -x $PY ]] || die "no virtualenv python at $PY (run: make bench, which installs it)"
case $WORK in /tmp/trackrelay-bench*) ;; *) die "WORK must be under /tmp/trackrelay-bench*" ;; esac

# one bench at a time on this machine (ports, CPU)
exec 9>"$WORK.lock"
flock -n 9 || die "another bench run holds $WORK.lock"

rm -rf "$WORK"
mkdir -p "$WORK/data" "$WORK/raw"
chmod 755 "$WORK"
: >"$WORK/pids"
RESULTS=$WORK/results.jsonl
: >"$RESULTS"
trap cleanup_all EXIT
trap 'exit 130' INT TERM

note() {  # note PART TEXT: shown in the report and on stderr
  log "$2"
  "$PY" -c 'import json,sys; print(json.dumps({"kind":"note","part":sys.argv[1],"text":sys.argv[2]}))' "$1" "$2" >>"$RESULTS"
}

have() { command -v "$1" >/dev/null 2>&1 || [[ -x /usr/sbin/$1 ]]; }

smtp_run() {  # smtp_run BLOCK TARGET PORT CONC RCPTS TRACKING FACTOR REP STORE
  "$PY" "$BENCH/lib/smtp_run.py" run --port "$3" --sink-log "$SINK_LOG" --msg "$WORK/data/newsletter.eml" \
    --from "$BENCH_FROM" --to "$BENCH_TO" --n "$N" --conc "$4" --rcpts "$5" --factor "$7" \
    --timeout "$E2E_TIMEOUT" --label "block=$1" --label "target=$2" --label "tracking=$6" --label "rep=$8" \
    --label "store=$9" --out "$RESULTS" || true
}

smtp_probe() {  # smtp_probe PORT RCPTS -> prints upstream messages per submitted mail
  "$PY" "$BENCH/lib/smtp_run.py" probe --port "$1" --sink-log "$SINK_LOG" --msg "$WORK/data/newsletter.eml" \
    --from "$BENCH_FROM" --to "$BENCH_TO" --rcpts "$2"
}

# the relay of each store: 0 not started yet, 1 set up (running while selected), -1 failed
declare -A RELAY_STATE=()
RELAY_UP=0
RELAY_RESTARTS=0
RELAY_FAIL=""
ensure_sink() { [[ -n $SINK_PID ]] || sink_start "$SINK_PORT"; }

# use_store STORE PART: the relay on STORE is the one running (the other one stopped first)
use_store() {
  if [[ $RELAY_KIND != "$1" ]]; then
    [[ -n $RELAY_KIND ]] && { relay_stop; RELAY_STATE[$RELAY_KIND]=$RELAY_UP; }
    relay_select "$1"
    RELAY_UP=${RELAY_STATE[$1]:-0}
    RELAY_RESTARTS=0
    if ((RELAY_UP == 1)) && ! relay_launch; then
      RELAY_UP=-1; RELAY_FAIL="relay ($1) did not start again"
    fi
  fi
  ensure_relay "$2"
}

# in_order REP: the stores in the order of that round (alternating, so neither always goes first)
in_order() {
  if (($1 % 2 == 1)) || ((${#STORES[@]} == 1)); then echo "${STORES[@]}"; else echo "${STORES[1]} ${STORES[0]}"; fi
}

ensure_relay() {
  if ((RELAY_UP == 1)); then
    relay_alive && return 0
    # not stopped by us: someone else's cleanup or a crash. Say so, restart once or twice.
    note "${1:-smtp}" "the relay (pid $RELAY_PID) stopped during the bench; last log line: $(tail -1 "$RELAY_LOG" | cut -c1-160)"
    ((RELAY_RESTARTS++ < 3)) && relay_launch && return 0
    RELAY_UP=-1; RELAY_FAIL="relay stopped and could not be restarted"; return 1
  fi
  ((RELAY_UP == 0)) || return 1
  if relay_start "$RELAY_SMTP_PORT" "$RELAY_HTTP_PORT" "$RELAY_ADMIN_PORT" "$SINK_PORT"; then
    RELAY_UP=1
  else
    RELAY_UP=-1
    RELAY_FAIL="relay did not start: $(grep -v '^\s*$' "$RELAY_LOG" 2>/dev/null | tail -1 | cut -c1-200)"
    [[ -s ${RELAY_LOG:-/nonexistent} ]] || RELAY_FAIL="relay did not start: $(tail -1 "$RELAY_DIR/setup.log" 2>/dev/null | cut -c1-200)"
  fi
  ((RELAY_UP == 1))
}

# ---------------------------------------------------------------- environment
"$PY" "$BENCH/data/make_newsletter.py" "$WORK/data" >&2
ENV_JSON=$WORK/env.json
"$PY" - "$ENV_JSON" "$ROOT" "${PARTS[*]}" \
  "N=$N REPS=$REPS CONC=$CONC TRACK_CONC=$TRACK_CONC RUNS=$RUNS DUR=$DUR CONNS=$CONNS THREADS=$THREADS HTTP_REPS=$HTTP_REPS REUSE=${REUSE:-0} SPLIT=${SPLIT:-0} HITS_PROCESSES=${HITS_PROCESSES:-2} STORE=$STORE" <<'PY'
import json, os, platform, subprocess, sys, time
out, root, parts, knobs = sys.argv[1:]
def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=root, timeout=10).stdout.strip()
    except Exception:
        return ""
model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
commit = sh("git", "rev-parse", "--short", "HEAD") or "?"
if sh("git", "status", "--porcelain", "--", "relay", "admin"):
    commit += " + uncommitted changes in relay/ or admin/"
json.dump({"date": time.strftime("%Y-%m-%d %H:%M %Z"), "parts": parts.split(),
           "machine": f"{os.cpu_count()} cores ({model}), Python {platform.python_version()}",
           "load_before": " ".join(open("/proc/loadavg").read().split()[:3]), "commit": commit, "knobs": knobs},
          open(out, "w"))
PY

if [[ " ${STORES[*]} " == *" postgresql "* ]]; then
  pg_start "$PG_PORT" || die "STORE=$STORE: no PostgreSQL (see $WORK/pg.log)"
fi

# ---------------------------------------------------------------- 2. rewrite (runs first, before
# any server is started: nothing of ours competes with it for the CPU)
if want rewrite; then
  log "== rewrite: $RUNS calls per case, interleaved"
  (cd "$ROOT" && "$PY" "$BENCH/lib/rewrite_bench.py" --data "$WORK/data" --runs "$RUNS" --out "$RESULTS" >/dev/null) \
    || note rewrite "rewrite benchmark failed: see output above"
  if grep -q '"status": "unavailable"' "$RESULTS"; then
    note rewrite "rewrite: not available yet ($(grep -o '"error": "[^"]*"' "$RESULTS" | head -1 | cut -c11-200))"
  fi
fi

# ---------------------------------------------------------------- 1. SMTP
if want smtp; then
  log "== SMTP: $N mails per run, sessions 1 and $CONC, $REPS rounds"
  for tool in smtp-source smtp-sink; do have "$tool" || die "$tool is missing (make bench installs postfix)"; done
  ensure_sink
  PF_OK=0
  if have postfix && postfix_start "$POSTFIX_PORT" "$SINK_PORT"; then
    if k=$(smtp_probe "$POSTFIX_PORT" 3); then PF_OK=1; else note smtp "postfix accepted but delivered nothing to the sink"; fi
  else
    note smtp "postfix reference not available: see $WORK/postfix"
  fi
  # per store: does mail get through, and how many upstream messages one mail becomes
  # K_ON["$st,$rc"]: upstream messages per tracked mail with rc recipients on that store's relay
  declare -A RELAY_OK=() K_OFF=() K_ON=()
  for st in "${STORES[@]}"; do
    RELAY_OK[$st]=0
    if use_store "$st" smtp; then
      if relay_policy off && K_OFF[$st]=$(smtp_probe "$RELAY_SMTP_PORT" 1); then
        RELAY_OK[$st]=1
        relay_policy always
        for rc in 1 3; do K_ON[$st,$rc]=$(smtp_probe "$RELAY_SMTP_PORT" "$rc") || K_ON[$st,$rc]=""; done
        log "relay ($st): one mail becomes ${K_OFF[$st]} upstream message(s) untracked, ${K_ON[$st,1]} tracked (1 rcpt), ${K_ON[$st,3]} tracked (3 rcpts)"
        [[ -n ${K_ON[$st,1]} && -n ${K_ON[$st,3]} ]] || note smtp "relay ($st) with tracking on delivered nothing to the sink (see $RELAY_LOG)"
      else
        note smtp "relay ($st) accepts connections but no mail reached the sink: $(grep -E 'ERROR|Traceback|Error' "$RELAY_LOG" | tail -1 | cut -c1-200)"
      fi
    else
      note smtp "$st: $RELAY_FAIL"
    fi
  done
  # each store's relay runs right after Postfix (and the sink) of the same round: the pairs
  # behind the ratios meet the machine in the same state
  for ((rep = 1; rep <= REPS; rep++)); do
    log "-- SMTP round $rep/$REPS"
    for st in $(in_order "$rep"); do
      ((RELAY_OK[$st])) || continue
      for conc in 1 "$CONC"; do
        smtp_run off sink "$SINK_PORT" "$conc" 1 - 1 "$rep" "$st"
        ((PF_OK)) && smtp_run off postfix "$POSTFIX_PORT" "$conc" 1 - 1 "$rep" "$st"
        if use_store "$st" smtp; then
          relay_policy off && smtp_run off relay "$RELAY_SMTP_PORT" "$conc" 1 off "${K_OFF[$st]}" "$rep" "$st"
        fi
      done
      for rc in 1 3; do
        ((PF_OK)) && smtp_run on postfix "$POSTFIX_PORT" "$TRACK_CONC" "$rc" - 1 "$rep" "$st"
        if [[ -n ${K_ON[$st,$rc]} ]] && use_store "$st" smtp; then
          relay_policy always && smtp_run on relay "$RELAY_SMTP_PORT" "$TRACK_CONC" "$rc" on "${K_ON[$st,$rc]}" "$rep" "$st"
        fi
      done
    done
  done
  postfix_stop
fi

# ---------------------------------------------------------------- 3. hits
if want hits; then
  log "== hits: wrk -t$THREADS -c$CONNS -d$DUR, $HTTP_REPS round(s)"
  declare -A TOKPOS=()  # per store: "TOKEN POSITION" of a tracked copy's first link
  NGINX_TOKPOS=""
  LOCATION=""
  if ! have wrk; then
    note hits "hits: wrk is missing (make bench installs it)"
  else
    ensure_sink
    for st in "${STORES[@]}"; do  # per store: a tracked mail through, its token, a working pixel and click
      if ! use_store "$st" hits; then
        note hits "hits ($st): not available yet ($RELAY_FAIL)"
      elif ! port_listening "$RELAY_HTTP_PORT"; then
        note hits "hits ($st): not available yet (nothing listens on http.listen 127.0.0.1:$RELAY_HTTP_PORT)"
      elif ! { relay_policy always && smtp_probe "$RELAY_SMTP_PORT" 1 >/dev/null; }; then
        note hits "hits ($st): not available yet (no tracked mail got through the relay to find a token)"
      elif ! tp=$("$PY" "$BENCH/lib/hits.py" token --db "$RELAY_STORE" 2>"$WORK/raw/token.err"); then
        note hits "hits ($st): not available yet ($(tail -1 "$WORK/raw/token.err"))"
      elif ! LOCATION=$("$PY" "$BENCH/lib/hits.py" check --base "http://127.0.0.1:$RELAY_HTTP_PORT" \
          --token "${tp% *}" --pos "${tp#* }" --gif-out "$WORK/raw/relay-pixel.gif" 2>"$WORK/raw/check.err"); then
        note hits "hits ($st): not available yet ($(tail -1 "$WORK/raw/check.err"))"
      else
        TOKPOS[$st]=$tp
        NGINX_TOKPOS=${NGINX_TOKPOS:-$tp}  # nginx is asked the same path as the first relay
      fi
    done
  fi
  if ((${#TOKPOS[@]})); then
    # nginx answers what the relay does: the same GIF, a redirect to the same link
    if have nginx && nginx_start "$NGINX_PORT" "$WORK/raw/relay-pixel.gif" "$LOCATION"; then NGX_OK=1; else
      NGX_OK=0; note hits "nginx reference not available: see $WORK/nginx/logs"; fi
    hit_run() {  # hit_run TARGET ENDPOINT URL REP STORE [DB]
      local db=()
      [[ -n ${6:-} ]] && db=(--db "$6")
      "$PY" "$BENCH/lib/hits.py" run --url "$3" "${db[@]}" --dur "$DUR" --conns "$CONNS" --threads "$THREADS" \
        --label "target=$1" --label "endpoint=$2" --label "rep=$4" --label "store=$5" --raw-dir "$WORK/raw" \
        --out "$RESULTS" || true
    }
    for ((rep = 1; rep <= HTTP_REPS; rep++)); do
      for ep in pixel click; do
        for st in - $(in_order "$rep"); do  # nginx first, with a token of the relay's
          tp=${TOKPOS[$st]:-$NGINX_TOKPOS}
          if [[ $ep == pixel ]]; then path="/o/${tp% *}.gif"; else path="/c/${tp% *}/${tp#* }"; fi
          if [[ $st == - ]]; then
            ((NGX_OK)) && hit_run nginx "$ep" "http://127.0.0.1:$NGINX_PORT$path" "$rep" -
            continue
          fi
          [[ -n ${TOKPOS[$st]:-} ]] || continue
          use_store "$st" hits && hit_run relay "$ep" "http://127.0.0.1:$RELAY_HTTP_PORT$path" "$rep" "$st" "$RELAY_STORE"
        done
      done
    done
    nginx_stop
  fi
fi

# ---------------------------------------------------------------- 4. notify (last: it adds a webhook)
if want notify; then
  log "== notify: wrk -t$THREADS -c$CONNS -d$DUR on the pixel, people opening other copies meanwhile"
  if ! have wrk; then
    note notify "notify: wrk is missing (make bench installs it)"
  else
    for st in "${STORES[@]}"; do
      if ! { ensure_sink && use_store "$st" notify && relay_policy always; }; then
        note notify "notify ($st): not available ($RELAY_FAIL)"
        continue
      fi
      log "notify on $st"
      "$PY" "$BENCH/lib/notify_bench.py" --smtp-port "$RELAY_SMTP_PORT" --hits-base "http://127.0.0.1:$RELAY_HTTP_PORT" \
        --store "$RELAY_STORE" --cli "$VENV_BIN/trackrelay" --conf "$RELAY_CONF" --sender "$BENCH_FROM" \
        --dur "$DUR" --conns "$CONNS" --threads "$THREADS" --label "store=$st" --out "$RESULTS" \
        || note notify "notify ($st) benchmark failed: see above"
    done
  fi
fi

# ---------------------------------------------------------------- report
relay_stop
pg_stop
"$PY" - "$ENV_JSON" <<'PY'
import json, sys
env = json.load(open(sys.argv[1]))
env["load_after"] = " ".join(open("/proc/loadavg").read().split()[:3])
json.dump(env, open(sys.argv[1], "w"))
PY
mkdir -p "$BENCH/results"
"$PY" "$BENCH/lib/report.py" "$RESULTS" "$ENV_JSON" "$WORK/latest.md"
cp "$WORK/latest.md" "$BENCH/results/latest.md"
cp "$RESULTS" "$BENCH/results/latest.jsonl"
log "written: bench/results/latest.md (raw: bench/results/latest.jsonl, logs: $WORK)"
