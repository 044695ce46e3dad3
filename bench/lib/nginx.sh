# bench/lib/nginx.sh -- sourced by bench/run.sh. The HTTP reference: nginx, one worker.
#
# nginx answers the same two URLs as the relay's hits server, without recording anything:
#   /o/<token>.gif   -> the GIF file given to nginx_start (the relay's own pixel bytes)
#   /c/<token>/<n>   -> 302 to the URL given to nginx_start (the relay's redirect target)
# One worker process, to compare with one Python process; no access log. Everything
# lives under $WORK/nginx (-p prefix, its own config, pid and error log), so /etc/nginx
# and the system nginx service are never used.

NGINX_DIR=""

nginx_start() {
  local port=$1 gif=$2 location=$3
  NGINX_DIR=$WORK/nginx
  require_free_port "$port" "nginx"
  case $location in
    *'"'* | *'$'* | *'\'* | *' '* | *';'* | '') location="https://www.nordlicht-outdoor.example/" ;;
  esac
  mkdir -p "$NGINX_DIR/html/o" "$NGINX_DIR/tmp" "$NGINX_DIR/logs"
  chmod -R a+rX "$NGINX_DIR"
  install -m 644 "$gif" "$NGINX_DIR/html/o/pixel.gif"
  cat >"$NGINX_DIR/nginx.conf" <<EOF
# written by trackrelay bench/lib/nginx.sh
worker_processes 1;
pid $NGINX_DIR/nginx.pid;
error_log $NGINX_DIR/logs/error.log warn;
worker_rlimit_nofile 8192;
events { worker_connections 4096; }
http {
    access_log off;
    server_tokens off;
    sendfile on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 1000000;
    open_file_cache max=16 inactive=60s;
    client_body_temp_path $NGINX_DIR/tmp/body;
    proxy_temp_path $NGINX_DIR/tmp/proxy;
    fastcgi_temp_path $NGINX_DIR/tmp/fastcgi;
    uwsgi_temp_path $NGINX_DIR/tmp/uwsgi;
    scgi_temp_path $NGINX_DIR/tmp/scgi;
    server {
        listen 127.0.0.1:$port backlog=4096;
        root $NGINX_DIR/html;
        etag off;
        if_modified_since off;
        location ~ ^/o/[A-Za-z0-9_-]+\.gif\$ {
            default_type image/gif;
            add_header Cache-Control "no-store, no-cache, must-revalidate, private" always;
            try_files /o/pixel.gif =404;
        }
        location ~ ^/c/[A-Za-z0-9_-]+/[0-9]+\$ {
            return 302 "$location";
        }
        location / { return 404; }
    }
}
EOF
  if ! nginx -p "$NGINX_DIR/" -e "$NGINX_DIR/logs/error.log" -c "$NGINX_DIR/nginx.conf" \
       >"$NGINX_DIR/logs/start.log" 2>&1 9>&-; then
    log "nginx did not start: $(tail -3 "$NGINX_DIR/logs/start.log")"
    return 1
  fi
  wait_port "$port" 10 || { log "nginx is not listening on 127.0.0.1:$port"; nginx_stop; return 1; }
  log "nginx on 127.0.0.1:$port (master pid $(cat "$NGINX_DIR/nginx.pid"))"
}

nginx_stop() {
  [[ -n ${NGINX_DIR:-} && -f $NGINX_DIR/nginx.pid ]] || return 0
  local pid i
  pid=$(cat "$NGINX_DIR/nginx.pid")
  pid_alive "$pid" || return 0
  log "stopping nginx (master pid $pid)"
  kill -QUIT "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do pid_alive "$pid" || return 0; sleep 0.1; done
  kill -TERM "$pid" 2>/dev/null || true
}
