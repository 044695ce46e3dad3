# bench/lib/postfix.sh -- sourced by bench/run.sh. The SMTP reference: a private Postfix.
#
# A throw-away Postfix instance that only relays: it listens on 127.0.0.1:$1 and hands
# every message to the smtp-sink on [127.0.0.1]:$2, queueing on disk with fsync like any
# production Postfix. Its whole world (main.cf, master.cf, queue, log) is $WORK/postfix;
# it is started and stopped with `postfix -c $WORK/postfix/etc`, so /etc/postfix and any
# system mail service are never touched. Defaults are kept on purpose (in_flow_delay,
# process limits, connection cache): it is "a stock Postfix relay", not a tuned one.
# Needs root (the Postfix master runs as root and drops to the postfix user).

PF_ROOT=""
PF_LOG=""

postfix_start() {
  local listen_port=$1 sink_port=$2
  PF_ROOT=$WORK/postfix
  PF_LOG=$PF_ROOT/postfix.log
  [[ $(id -u) == 0 ]] || { log "postfix reference needs root: skipped"; PF_ROOT=""; return 1; }
  require_free_port "$listen_port" "postfix"
  mkdir -p "$PF_ROOT/etc" "$PF_ROOT/queue" "$PF_ROOT/data"
  chmod 755 "$PF_ROOT" "$PF_ROOT/etc"
  chown postfix "$PF_ROOT/data"
  cat >"$PF_ROOT/etc/main.cf" <<EOF
# written by trackrelay bench/lib/postfix.sh: a pure relay to the bench's smtp-sink
compatibility_level = 3.6
queue_directory = $PF_ROOT/queue
data_directory = $PF_ROOT/data
mail_owner = postfix
setgid_group = postdrop
# no syslog in a container: log to a file
maillog_file = $PF_LOG
maillog_file_prefixes = /tmp
myhostname = postfix.bench.local
mydomain = bench.local
myorigin = \$myhostname
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
# nothing is local: every recipient is relayed to the sink
mydestination =
local_recipient_maps =
local_transport = error:5.1.1 no local delivery here
alias_maps =
alias_database =
relayhost = [127.0.0.1]:$sink_port
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = permit_mynetworks, reject
# offline: no DNS, no reverse lookups
smtpd_peername_lookup = no
smtp_dns_support_level = disabled
smtp_host_lookup = native
smtpd_tls_security_level = none
smtp_tls_security_level = none
biff = no
smtpd_banner = \$myhostname ESMTP
EOF
  cat >"$PF_ROOT/etc/master.cf" <<EOF
# service type private unpriv chroot wakeup maxproc command
127.0.0.1:$listen_port inet n - n - - smtpd
pickup     unix  n - n 60    1 pickup
cleanup    unix  n - n -     0 cleanup
qmgr       unix  n - n 300   1 qmgr
rewrite    unix  - - n -     - trivial-rewrite
bounce     unix  - - n -     0 bounce
defer      unix  - - n -     0 bounce
trace      unix  - - n -     0 bounce
verify     unix  - - n -     1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -     - proxymap
proxywrite unix  - - n -     1 proxymap
smtp       unix  - - n -     - smtp
relay      unix  - - n -     - smtp
showq      unix  n - n -     - showq
error      unix  - - n -     - error
retry      unix  - - n -     - error
discard    unix  - - n -     - discard
anvil      unix  - - n -     1 anvil
scache     unix  - - n -     1 scache
postlog    unix-dgram n - n - 1 postlogd
EOF
  if ! postfix -c "$PF_ROOT/etc" check >"$PF_ROOT/check.log" 2>&1 \
     || ! postfix -c "$PF_ROOT/etc" start >>"$PF_ROOT/check.log" 2>&1 9>&-; then
    log "postfix did not start: $(tail -3 "$PF_ROOT/check.log")"
    return 1
  fi
  if ! wait_port "$listen_port" 20; then
    log "postfix is not listening on 127.0.0.1:$listen_port: $(tail -3 "$PF_LOG" 2>/dev/null)"
    postfix_stop
    return 1
  fi
  log "postfix relay 127.0.0.1:$listen_port -> [127.0.0.1]:$sink_port (master pid $(postfix_master_pid))"
}

postfix_master_pid() { tr -d ' ' <"$PF_ROOT/queue/pid/master.pid" 2>/dev/null; }

# postfix_queued: messages still in the queue
postfix_queued() {
  find "$PF_ROOT/queue"/{maildrop,incoming,active,deferred,hold} -type f 2>/dev/null | wc -l
}

postfix_stop() {
  [[ -n ${PF_ROOT:-} && -f $PF_ROOT/etc/main.cf ]] || return 0
  local pid
  pid=$(postfix_master_pid)
  [[ -n $pid ]] && pid_alive "$pid" || return 0
  log "stopping postfix (master pid $pid)"
  postfix -c "$PF_ROOT/etc" stop >/dev/null 2>&1 || true
  local i
  for ((i = 0; i < 100; i++)); do pid_alive "$pid" || return 0; sleep 0.1; done
  log "postfix master $pid still running: SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
}
