#!/usr/bin/env bash
# Compares `loadgen serve` with nginx on loopback: both with one thread/worker, the
# same 64-byte 200 response, driven by h2load (HTTP/1.1 keep-alive, -c 64, 10 s).
# Reports req/s and req/s per CPU-second of the server process (utime+stime from
# /proc/PID/stat). Usage: serve-vs-nginx.sh [path/to/loadgen] [duration_s]
set -euo pipefail
LOADGEN=${1:-target/release/loadgen}
DUR=${2:-10}
CONNS=${CONNS:-64}
BODY=$(printf 'x%.0s' $(seq 1 64))
TMP=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$TMP"' EXIT
TICKS=$(getconf CLK_TCK)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

measure() { # name pid port
  local name=$1 pid=$2 port=$3 before after out rps cpu
  h2load --h1 -c "$CONNS" -t 1 -D 1 "http://127.0.0.1:$port/" >/dev/null 2>&1 # warm up
  before=$(cpu_ticks "$pid")
  out=$(h2load --h1 -c "$CONNS" -t 1 -D "$DUR" "http://127.0.0.1:$port/")
  after=$(cpu_ticks "$pid")
  rps=$(echo "$out" | awk '/^finished in/ {print $4}')
  cpu=$(echo "($after - $before) / $TICKS" | bc -l)
  printf '%-14s %12s req/s  server CPU %6.2f s  %10.0f req per CPU-second  (%s)\n' \
    "$name" "$rps" "$cpu" "$(echo "$rps * $DUR / $cpu" | bc -l)" \
    "$(echo "$out" | grep '^requests:')"
}

PORT_NGINX=${PORT_NGINX:-18081}
cat >"$TMP/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;
  keepalive_timeout 75s;
  server {
    listen 127.0.0.1:$PORT_NGINX;
    location / { default_type text/plain; return 200 "$BODY"; }
  }
}
CONF
/usr/sbin/nginx -c "$TMP/nginx.conf" -p "$TMP" &
sleep 0.5
NGINX_WORKER=$(pgrep -P "$(cat "$TMP/nginx.pid")" | head -1)

"$LOADGEN" serve --listen 127.0.0.1:0 --threads 1 --body-size 64 >"$TMP/serve.out" &
SERVE_PID=$!
sleep 0.5
PORT_SERVE=$(grep -o '127.0.0.1:[0-9]*' "$TMP/serve.out" | cut -d: -f2)

measure "loadgen serve" "$SERVE_PID" "$PORT_SERVE"
measure "nginx" "$NGINX_WORKER" "$PORT_NGINX"
