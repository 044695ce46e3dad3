# bench/lib/sink.sh -- sourced by bench/run.sh. The mail sink every SMTP run ends in.
#
# Postfix's smtp-sink accepts and discards mail as fast as SMTP allows. With -c it keeps
# running counters ("sess=N quit=N mesg=N", CR-separated) on stdout; they go to
# $SINK_LOG, and bench/lib/smtp_run.py reads mesg= from there to stop the end-to-end clock
# when the last message has arrived. As root it runs as nobody (it refuses root).

SINK_LOG=""
SINK_PID=""

sink_start() {
  local port=$1
  SINK_LOG=$WORK/sink.log
  require_free_port "$port" "smtp-sink"
  # -m 512: up to 512 simultaneous sessions; backlog 1024 so bursts never hit a full queue
  local user=()
  [[ $(id -u) == 0 ]] && user=(-u nobody)
  SINK_PID=$(start_bg smtp-sink "$SINK_LOG" /usr/sbin/smtp-sink "${user[@]}" -c -m 512 "127.0.0.1:$port" 1024)
  wait_port "$port" 10 "$SINK_PID" || die "smtp-sink did not start on 127.0.0.1:$port: $(tail -3 "$SINK_LOG")"
  log "smtp-sink on 127.0.0.1:$port (pid $SINK_PID)"
}

# sink_count: messages the sink has received so far
sink_count() {
  tail -c 400 "$SINK_LOG" 2>/dev/null | tr '\r' '\n' | grep -o 'mesg=[0-9]*' | tail -1 | cut -d= -f2 | grep . || echo 0
}
