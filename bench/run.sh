#!/usr/bin/env bash
# End-to-end benchmark of rtun against direct access, nginx (one-hop reverse proxy) and
# rathole (reverse tunnel). See bench/README.md for what it measures and how to read it.
#
#   bench/run.sh [--quick] [--no-build] [--shards N] [--rounds R] [--duration SECS]
#                [--setups "direct rtun rtun-pgo rtun-tls nginx nginx-2hop rathole rathole-nodelay"]
#                [--loads "a b c d e f scale tls-rate"]
#                [--no-install] [--out DIR] [--cross-check] [--perf]
#
# --cross-check also measures the direct and nginx setups with h2load (load a) and wrk (load b)
# beside loadgen, against loadgen serve and an nginx backend (bench/README.md, "Cross-check").
# --perf counts syscalls per request and records CPU profiles of the proxy processes with perf
# in loads (a) and (b) of the last round (bench/perf.sh; bench/README.md, "Syscalls and profiles").
# The rtun-pgo setup (not in the default list) is rtun's profile-guided build, target/pgo/rtun,
# made by bench/pgo.sh unless --no-build (about ten minutes; needs rustup's llvm-tools).
# Everything listens on 127.0.0.1 (the swarm also binds 127.0.0.2-20 as sources); every
# process started here is killed on exit; every wait is bounded.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=$ROOT/bench
TOOLS=$BENCH/.tools
# shellcheck source=bench/roles.sh
. "$BENCH/roles.sh"
# shellcheck source=bench/nginx.sh
. "$BENCH/nginx.sh"
QUICK=0 BUILD=1 INSTALL=1 SHARDS=2 ROUNDS=3 DURATION=8 WARMUP=1 XCHECK=0 PERF=0
SETUPS="direct rtun rtun-tls nginx rathole rathole-nodelay"
LOADS="a b c d e f scale tls-rate"
OUT=""
SWARM_NODES=1000 SCALE_NODES=10000 TLS_RATE_NODES=2000 BULK=$((1 << 30))
while [ $# -gt 0 ]; do
  case $1 in
    --quick) QUICK=1 ;;
    --no-build) BUILD=0 ;;
    --no-install) INSTALL=0 ;;
    --shards) SHARDS=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --setups) SETUPS=$2; shift ;;
    --loads) LOADS=$2; shift ;;
    --out) OUT=$2; shift ;;
    --cross-check) XCHECK=1 ;;
    --perf) PERF=1 ;;
    -h|--help) sed -n 2,17p "$0"; exit 0 ;;
    *) echo "bench: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
if [ $QUICK = 1 ]; then
  ROUNDS=1 DURATION=2 WARMUP=0.5 BULK=$((64 << 20))
  # Installing rathole means compiling it (minutes): --quick only uses an installed one.
  INSTALL=0
fi

STAMP=$(date +%Y%m%d-%H%M%S)
RES=${OUT:-$BENCH/results/$STAMP}
mkdir -p "$RES/runs" "$RES/logs" "$RES/conf"
RES=$(cd "$RES" && pwd)
START_TS=$(date +%s)
log() { echo "bench: $*" | tee -a "$RES/bench.log" >&2; }
note() { echo "$*" >>"$RES/notes.txt"; log "$*"; }

# ---------------------------------------------------------------- processes and cleanup
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -TERM "$p" 2>/dev/null; done
  sleep 0.3
  for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -KILL "$p" 2>/dev/null; done
  wait 2>/dev/null
}
trap cleanup EXIT
trap 'exit 130' INT TERM
stop_pid() { kill -TERM "$1" 2>/dev/null; local i; for i in $(seq 1 30); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done; kill -KILL "$1" 2>/dev/null; }

# Raise the fd limit for 10,000 tunnels (the swarm and the responder each hold one fd per tunnel).
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
note "fd limit: $(ulimit -n)"

# ---------------------------------------------------------------- build
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
BIN=$CARGO_TARGET_DIR/release
if [ $BUILD = 1 ]; then
  log "building release binaries (cargo build --release --workspace)"
  (cd "$ROOT" && cargo build --release --workspace) >"$RES/logs/build.log" 2>&1 \
    || { tail -20 "$RES/logs/build.log" >&2; echo "bench: build failed" >&2; exit 1; }
fi
for b in rtun loadgen; do
  [ -x "$BIN/$b" ] || { echo "bench: $BIN/$b missing (build first or drop --no-build)" >&2; exit 1; }
done
LOADGEN=$BIN/loadgen RTUN=$BIN/rtun
# rtun-pgo: the profile-guided build (bench/pgo.sh), beside the plain one in the same rounds.
RTUN_PGO=$ROOT/target/pgo/rtun
if [[ " $SETUPS " == *" rtun-pgo "* ]] && [ $BUILD = 1 ]; then
  log "building the profile-guided rtun (bench/pgo.sh, about ten minutes)"
  "$BENCH/pgo.sh" >"$RES/logs/pgo.log" 2>&1 || rm -f "$RTUN_PGO"
fi

# ---------------------------------------------------------------- ports
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_base() {
  # Below the ephemeral range, so outgoing connections (ours and others') never hold our ports.
  local base i ok low
  low=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  [ "$low" -gt 12100 ] 2>/dev/null || low=32768
  for _ in $(seq 1 50); do
    base=$((10000 + (RANDOM % ((low - 10100) / 100)) * 100))
    ok=1
    for i in $(seq 0 29); do port_free $((base + i)) || { ok=0; break; }; done
    [ $ok = 1 ] && { echo $base; return; }
  done
  echo "bench: no free port range found" >&2; exit 1
}
BASE=${BENCH_PORT_BASE:-$(pick_base)}
P_SVC=$BASE P_RTUN_TUN=$((BASE+1)) P_RTUN_EGR=$((BASE+2)) P_RTUN_ADM=$((BASE+3)) P_INIT_ADM=$((BASE+4))
P_NGX_H1=$((BASE+5)) P_NGX_H2=$((BASE+6)) P_RH_CTL=$((BASE+7)) P_RH_SVC=$((BASE+8))
P_RHN_CTL=$((BASE+9)) P_RHN_SVC=$((BASE+10)) P_SW_TUN=$((BASE+11)) P_SW_EGR=$((BASE+12)) P_SW_ADM=$((BASE+13))
P_TLS_TUN=$((BASE+14)) P_TLS_EGR=$((BASE+15)) P_TLS_ADM=$((BASE+16)) P_TLS_IADM=$((BASE+17))
P_PGO_TUN=$((BASE+23)) P_PGO_EGR=$((BASE+24)) P_PGO_ADM=$((BASE+25)) P_PGO_IADM=$((BASE+26))
# --cross-check: the nginx backend (HTTP/1.1, h2c) and the bench's nginx proxying to it (h1, h2c).
P_NGB_H1=$((BASE+18)) P_NGB_H2=$((BASE+19)) P_NGX_XH1=$((BASE+20)) P_NGX_XH2=$((BASE+21))
# --perf: nginx's stub_status (its request counter, read around each perf window).
P_NGX_ST=$((BASE+22))
# nginx-2hop: the front nginx (h1, h2c) and the back nginx it proxies to.
P_N2F_H1=$((BASE+27)) P_N2F_H2=$((BASE+28)) P_N2B=$((BASE+29))
log "results in $RES; ports $BASE-$((BASE+29)); shards $SHARDS; rounds $ROUNDS; ${DURATION}s per run"

wait_port() { # port timeout_s
  local i
  for i in $(seq 1 $(( $2 * 10 ))); do port_free "$1" || return 0; sleep 0.1; done
  return 1
}
wait_http() { # timeout_s curl-args...
  local t=$1 i; shift
  for i in $(seq 1 $((t * 10))); do
    [ "$(curl -s -o /dev/null -m 2 -w '%{http_code}' "$@")" = 200 ] && return 0
    sleep 0.1
  done
  return 1
}

# ---------------------------------------------------------------- the service
# --no-pin (here and for every `loadgen run`): a thread pinned to a core cannot move away from a
# single-threaded peer (nginx's one worker) on a small machine; pinned, loadgen measured nginx
# 26-36 % below h2load/wrk (bench/README.md, "Cross-check").
"$LOADGEN" serve --no-pin --listen "127.0.0.1:$P_SVC" --threads "$SHARDS" >"$RES/logs/service.log" 2>&1 &
SVC_PID=$!; PIDS+=($SVC_PID)
wait_port $P_SVC 10 || { echo "bench: loadgen serve did not start" >&2; exit 1; }

declare -A URL_H1 URL_H2 HDRS SPIDS
URL_H1[direct]=http://127.0.0.1:$P_SVC URL_H2[direct]=http://127.0.0.1:$P_SVC HDRS[direct]="" SPIDS[direct]=""
ACTIVE=()
EXPECTED=()   # setups that should produce numbers
SKIPPED=()

# A CA, a responder certificate and an initiator certificate for the TLS tunnel (mutual TLS,
# P-256 keys), made with openssl as README "Securing rtun" does.
make_pki() { # dir
  local d=$1
  mkdir -p "$d"
  (cd "$d" &&
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca-key.pem \
      -out ca.pem -days 2 -subj /CN=bench-ca -addext basicConstraints=critical,CA:TRUE \
      -addext keyUsage=critical,keyCertSign,cRLSign &&
    for leaf in responder:serverAuth:IP:127.0.0.1 initiator:clientAuth:DNS:bench-node; do
      IFS=: read -r name eku san_kind san <<<"$leaf"
      openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$name-key.pem" -out "$name.csr" -subj "/CN=$name" &&
      printf 'subjectAltName=%s:%s\nextendedKeyUsage=%s\n' "$san_kind" "$san" "$eku" >"$name.ext" &&
      openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca-key.pem -CAcreateserial \
        -out "$name.pem" -days 2 -extfile "$name.ext" || return 1
    done) >"$RES/logs/pki.log" 2>&1
}

start_rtun() { # setup tunnel-port egress-port responder-admin initiator-admin tls(0|1) [binary]
  local name=$1 tun=$2 egr=$3 adm=$4 iadm=$5 tls=$6 bin=${7:-$RTUN} server_tls="" client_tls=""
  if [ "$tls" = 1 ]; then
    make_pki "$RES/conf/pki" || { note "$name: openssl could not make certificates"; return 1; }
    local k=$RES/conf/pki
    server_tls="    tls: { cert: $k/responder.pem, key: $k/responder-key.pem, client_ca: $k/ca.pem }"
    client_tls="    tls: { ca: $k/ca.pem, cert: $k/initiator.pem, key: $k/initiator-key.pem }"
  fi
  roles_config "$RES/conf" "$name" "$SHARDS" "$P_SVC" "$tun" "$egr" bench-node \
    "admin: { listen: 127.0.0.1:$adm }" "admin: { listen: 127.0.0.1:$iadm }" "$client_tls" "$server_tls"
  roles_start "$bin" "$RES/conf" "$name" "$RES/logs"
  local r=$ROLE_R i=$ROLE_I
  if ! roles_ready "http://127.0.0.1:$egr/" bench-node 20; then
    note "$name did not become ready (see logs/$name-*.log)"; return 1
  fi
  URL_H1[$name]=http://127.0.0.1:$egr URL_H2[$name]=http://127.0.0.1:$egr
  HDRS[$name]="x-node-id: bench-node" SPIDS[$name]="$r $i"
  [ "$tls" = 1 ] && note "$name: the tunnel runs mutual TLS (rustls, ring, P-256 certificates); measured on loads (a) and (b) only"
  return 0
}

NGINX=""
find_nginx() {
  [ -n "$NGINX" ] && return 0
  local ngx
  ngx=$(command -v nginx || echo /usr/sbin/nginx)
  if [ ! -x "$ngx" ] && [ $INSTALL = 1 ]; then
    log "installing nginx (apt-get)"
    (apt-get install -y nginx || { apt-get update && apt-get install -y nginx; }) >"$RES/logs/nginx-install.log" 2>&1
    ngx=$(command -v nginx || echo /usr/sbin/nginx)
  fi
  [ -x "$ngx" ] || return 1
  NGINX=$ngx
}

start_nginx() {
  find_nginx || { note "nginx unavailable: not installed (and --no-install, --quick, or apt-get install failed)"; return 2; }
  local ngx=$NGINX
  local d=$RES/nginx; mkdir -p "$d"
  # bench/nginx.sh: the upstream pool to the service, and the same locations on two ports (h1, h2c)
  local bulk; bulk=$(nginx_bulk_locations service)
  local lines
  lines="$(nginx_upstream service "$P_SVC")
$(nginx_proxy_server "127.0.0.1:$P_NGX_H1" service "$bulk")
$(nginx_proxy_server "127.0.0.1:$P_NGX_H2 http2" service "$bulk")"
  # --cross-check: the same locations on two more ports, proxying to the nginx backend instead
  # of loadgen serve (one nginx process pair, so its CPU is measured the same way).
  [ $XCHECK = 1 ] && lines="$lines
$(nginx_upstream ngx_backend "$P_NGB_H1")
$(nginx_proxy_server "127.0.0.1:$P_NGX_XH1" ngx_backend)
$(nginx_proxy_server "127.0.0.1:$P_NGX_XH2 http2" ngx_backend)"
  # --perf: the request counter, on a port of its own (nothing else changes).
  [ $PERF = 1 ] && lines="$lines
  server {
    listen 127.0.0.1:$P_NGX_ST;
    location = /stub_status { stub_status; }
  }"
  nginx_conf "$RES/conf/nginx.conf" "$d" on "$lines"
  "$ngx" -c "$RES/conf/nginx.conf" -p "$d" >"$RES/logs/nginx.log" 2>&1 &
  local m=$!; PIDS+=($m)
  wait_port $P_NGX_H1 10 && wait_http 10 "http://127.0.0.1:$P_NGX_H1/" \
    || { note "nginx did not start: $(tail -2 "$RES/logs/nginx.log" "$d/error.log" 2>/dev/null | tr '\n' ' ')"; return 1; }
  local w; w=$(pgrep -P "$m" | head -1)
  URL_H1[nginx]=http://127.0.0.1:$P_NGX_H1 URL_H2[nginx]=http://127.0.0.1:$P_NGX_H2
  HDRS[nginx]="" SPIDS[nginx]="$m $w"
  note "nginx: $("$ngx" -v 2>&1 | sed 's/.*version: //'), 1 worker, upstream keepalive 256"
}

# nginx-2hop: what nginx costs for the two hops rtun makes: client → nginx (front) → nginx
# (back) → service, each one worker with the nginx setup's keep-alive pool and bulk locations,
# the hop between them HTTP/1.1 (nginx proxies upstream over HTTP/1.1 only). Named in --setups
# only: a comparison for rtun's two processes, not a target's baseline.
start_nginx_2hop() {
  find_nginx || { note "nginx-2hop unavailable: nginx not installed"; return 2; }
  local d=$RES/nginx-2hop lines
  mkdir -p "$d/front" "$d/back"
  lines="$(nginx_upstream service "$P_SVC")
$(nginx_proxy_server "127.0.0.1:$P_N2B" service "$(nginx_bulk_locations service)")"
  nginx_conf "$RES/conf/nginx-2hop-back.conf" "$d/back" on "$lines"
  local bulk; bulk=$(nginx_bulk_locations back)
  lines="$(nginx_upstream back "$P_N2B")
$(nginx_proxy_server "127.0.0.1:$P_N2F_H1" back "$bulk")
$(nginx_proxy_server "127.0.0.1:$P_N2F_H2 http2" back "$bulk")"
  nginx_conf "$RES/conf/nginx-2hop-front.conf" "$d/front" on "$lines"
  "$NGINX" -c "$RES/conf/nginx-2hop-back.conf" -p "$d/back" >"$RES/logs/nginx-2hop-back.log" 2>&1 &
  local b=$!; PIDS+=($b)
  "$NGINX" -c "$RES/conf/nginx-2hop-front.conf" -p "$d/front" >"$RES/logs/nginx-2hop-front.log" 2>&1 &
  local f=$!; PIDS+=($f)
  wait_port $P_N2F_H1 10 && wait_http 10 "http://127.0.0.1:$P_N2F_H1/" \
    || { note "nginx-2hop did not start: $(tail -2 "$RES/logs/nginx-2hop-"*.log "$d"/*/error.log 2>/dev/null | tr '\n' ' ')"; return 1; }
  URL_H1[nginx-2hop]=http://127.0.0.1:$P_N2F_H1 URL_H2[nginx-2hop]=http://127.0.0.1:$P_N2F_H2
  HDRS[nginx-2hop]="" SPIDS[nginx-2hop]="$f $(pgrep -P "$f" | head -1) $b $(pgrep -P "$b" | head -1)"
  note "nginx-2hop: two nginx, 1 worker each, front → back over an HTTP/1.1 keep-alive pool"
}

RATHOLE=""
find_rathole() {
  for c in "$TOOLS/bin/rathole" "$HOME/.cargo/bin/rathole" "$(command -v rathole 2>/dev/null)"; do
    [ -n "$c" ] && [ -x "$c" ] && { RATHOLE=$c; return 0; }
  done
  if [ $INSTALL = 0 ]; then
    note "rathole unavailable: not installed (--quick does not compile it; run bench/run.sh once without --quick, or: cargo install rathole --root bench/.tools)"
    return 1
  fi
  log "installing rathole (cargo install rathole --root bench/.tools; without --locked: its lockfile no longer builds)"
  if timeout 1500 cargo install rathole --root "$TOOLS" >"$RES/logs/rathole-install.log" 2>&1; then
    RATHOLE=$TOOLS/bin/rathole; return 0
  fi
  note "rathole unavailable: cargo install failed: $(grep -m1 '^error' "$RES/logs/rathole-install.log")"
  return 1
}

start_rathole() { # name ctl_port svc_port nodelay(0|1)
  local name=$1 ctl=$2 svc=$3 nd=$4
  [ -n "$RATHOLE" ] || find_rathole || return 2
  local extra="" pre=""
  if [ "$nd" = 1 ]; then
    extra="nodelay = true"
    local so=$RES/nodelay_shim.so
    if [ ! -f "$so" ]; then
      cc -O2 -shared -fPIC -o "$so" "$BENCH/nodelay_shim.c" -ldl 2>"$RES/logs/shim.log" \
        || { note "$name unavailable: cannot build the LD_PRELOAD shim (cc)"; return 2; }
    fi
    pre=$so
  fi
  cat >"$RES/conf/$name-server.toml" <<EOF
[server]
bind_addr = "127.0.0.1:$ctl"
default_token = "bench"
[server.services.service]
bind_addr = "127.0.0.1:$svc"
$extra
EOF
  cat >"$RES/conf/$name-client.toml" <<EOF
[client]
remote_addr = "127.0.0.1:$ctl"
default_token = "bench"
[client.services.service]
local_addr = "127.0.0.1:$P_SVC"
$extra
EOF
  RUST_LOG=warn LD_PRELOAD=$pre "$RATHOLE" --server "$RES/conf/$name-server.toml" >"$RES/logs/$name-server.log" 2>&1 &
  local s=$!; PIDS+=($s)
  RUST_LOG=warn LD_PRELOAD=$pre "$RATHOLE" --client "$RES/conf/$name-client.toml" >"$RES/logs/$name-client.log" 2>&1 &
  local c=$!; PIDS+=($c)
  wait_port "$svc" 15 && wait_http 10 "http://127.0.0.1:$svc/" \
    || { note "$name did not start (see logs/$name-*.log)"; return 1; }
  URL_H1[$name]=http://127.0.0.1:$svc URL_H2[$name]=http://127.0.0.1:$svc
  HDRS[$name]="" SPIDS[$name]="$s $c"
  [ "$nd" = 1 ] && note "$name: DIAGNOSTIC, rathole with TCP_NODELAY forced on every socket (LD_PRELOAD bench/nodelay_shim.c; its own nodelay options do not reach the visitor and local-service sockets in 0.5.0)"
  [ "$nd" = 1 ] || note "rathole: $(basename "$(dirname "$(dirname "$RATHOLE")")")/bin/rathole $(ls -d ~/.cargo/registry/src/*/rathole-* 2>/dev/null | tail -1 | sed "s/.*rathole-//"), default configuration (TCP transport)"
}

for s in $SETUPS; do
  rc=0
  case $s in
    direct) ;;
    rtun) start_rtun rtun $P_RTUN_TUN $P_RTUN_EGR $P_RTUN_ADM $P_INIT_ADM 0; rc=$? ;;
    rtun-pgo)
      if [ -x "$RTUN_PGO" ]; then start_rtun rtun-pgo $P_PGO_TUN $P_PGO_EGR $P_PGO_ADM $P_PGO_IADM 0 "$RTUN_PGO"; rc=$?
      else note "rtun-pgo unavailable: no target/pgo/rtun (bench/pgo.sh failed or --no-build; see logs/pgo.log)"; rc=2; fi ;;
    rtun-tls) start_rtun rtun-tls $P_TLS_TUN $P_TLS_EGR $P_TLS_ADM $P_TLS_IADM 1; rc=$? ;;
    nginx) start_nginx; rc=$? ;;
    nginx-2hop) start_nginx_2hop; rc=$? ;;
    rathole) start_rathole rathole $P_RH_CTL $P_RH_SVC 0; rc=$? ;;
    rathole-nodelay) start_rathole rathole-nodelay $P_RHN_CTL $P_RHN_SVC 1; rc=$? ;;
    *) echo "bench: unknown setup $s" >&2; exit 2 ;;
  esac
  case $rc in
    0) ACTIVE+=("$s"); EXPECTED+=("$s") ;;
    2) SKIPPED+=("$s") ;;
    *) EXPECTED+=("$s") ;;   # should have run: counts as a failure
  esac
done
log "setups: ${ACTIVE[*]}${SKIPPED[*]:+ (skipped: ${SKIPPED[*]})}"
# The TLS-tunnel variant runs loads (a) and (b) only: it measures what TLS adds per request.
AB=("${ACTIVE[@]}") ACTIVE=()
for s in "${AB[@]}"; do [ "$s" = rtun-tls ] || ACTIVE+=("$s"); done

# ---------------------------------------------------------------- measuring
TCK=$(getconf CLK_TCK)
# utime and stime of PIDS apart ("USER SYS"): where a setup's CPU goes, its code or the kernel.
cpu_split() { local u=0 k=0 p; for p in $1; do [ -r "/proc/$p/stat" ] && read -r u k < <(awk -v u=$u -v k=$k '{print u + $14, k + $15}' "/proc/$p/stat"); done; echo "$u $k"; }
cpu_ticks() { local u k; read -r u k < <(cpu_split "$1"); echo $((u + k)); }
reset_hwm() { local p; for p in $1; do [ -e "/proc/$p/clear_refs" ] && echo 5 >"/proc/$p/clear_refs" 2>/dev/null; done; }
sum_status() { local k=0 p v; for p in $1; do v=$(awk -v f="$2:" '$1==f {print $2}' "/proc/$p/status" 2>/dev/null); k=$((k + ${v:-0})); done; echo $k; }
# How the responder's shards share a run (rtun setups): load (a) is four h2 connections and a
# request stays on the shard its connection was handed to, so the split is drawn per run.
# shard_ticks SETUP PIDS: "rtun-shard-0=T rtun-shard-1=T" (utime+stime of each thread of the
# responder, the first of an rtun setup's PIDS, whose comm has "shard", in shard order), empty
# for other setups or when unreadable; shard_delta BEFORE AFTER: "T0,T1" (ticks in between),
# empty unless both name the same threads.
shard_ticks() {
  local t c s f
  case $1 in rtun*) ;; *) return 0 ;; esac
  for t in /proc/"${2%% *}"/task/*; do
    { read -r c 2>/dev/null <"$t/comm" && [[ $c == *shard* ]]; } || continue
    read -r s 2>/dev/null <"$t/stat" || continue
    read -r -a f <<<"${s##*) }"   # from the state on: utime and stime are the 12th and 13th
    echo "$c=$((f[11] + f[12]))"
  done 2>/dev/null | sort -V | paste -sd' '
}
shard_delta() {
  awk -v a="$1" -v b="$2" 'BEGIN { n = split(a, x, " "); if (n == 0 || n != split(b, y, " ")) exit
    for (i = 1; i <= n; i++) { split(x[i], p, "="); split(y[i], q, "="); if (p[1] != q[1]) exit
      o = o (i > 1 ? "," : "") (q[2] - p[2]) }
    print o }'
}

# Sleeps through the warm-up of a `loadgen run` given its arguments (--warmup S[s|ms]) plus its
# 20 ms start delay; returns at once when there is no warm-up.
sleep_warmup() {
  local w=""
  while [ $# -gt 0 ]; do [ "$1" = --warmup ] && w=${2:-}; shift; done
  [ -n "$w" ] || return 0
  case $w in *ms) w=$(awk -v v="${w%ms}" 'BEGIN{print v/1000}') ;; *s) w=${w%s} ;; esac
  sleep "$(awk -v v="$w" 'BEGIN{print v + 0.02}')"
}

# --perf (bench/perf.sh): perf_start/perf_finish around the last round's (a) and (b) runs.
PERF_OK=0
if [ $PERF = 1 ]; then
  # shellcheck source=bench/perf.sh
  . "$BENCH/perf.sh"
  perf_init   # on failure: one line in the log and the notes, PERF_OK=0
fi
[ $PERF_OK = 1 ] || { perf_start() { :; }; perf_finish() { :; }; }

TSV=$RES/results.tsv
printf 'round\tload\tsetup\tjson\tcpu_ticks\trss_hwm_kib\tclk_tck\tuser_ticks\tsys_ticks\tresponder_shard_ticks\n' >"$TSV"

run_load() { # round load setup loadgen-args...
  local round=$1 load=$2 setup=$3; shift 3
  local pids=${SPIDS[$setup]} prefix=$RES/runs/$load.$setup.r$round
  local hdr=() ; [ -n "${HDRS[$setup]}" ] && hdr=(-H "${HDRS[$setup]}")
  local sh0 shards
  reset_hwm "$pids"
  # loadgen exits non-zero when more requests fail than --max-errors allows (default 0): a few
  # errors under load keep the run (they show in the report's errors column); more discard it.
  timeout $(( ${DURATION%.*} * 4 + 200 )) "$LOADGEN" run --no-pin --max-errors 1% "$@" "${hdr[@]}" --out "$prefix" >"$prefix.txt" 2>&1 &
  local lp=$!
  # --perf: attached now (disabled); it counts and samples in windows inside the measured one.
  perf_start "$round" "$load" "$setup" "$prefix.json"
  # CPU is counted over the measured window only (the requests it is divided by): from the end
  # of loadgen's warm-up (it starts 20 ms after launch) until loadgen exits.
  sleep_warmup "$@"
  local u0 k0; read -r u0 k0 < <(cpu_split "$pids")
  sh0=$(shard_ticks "$setup" "$pids")
  wait $lp
  local rc=$?
  local u1 k1; read -r u1 k1 < <(cpu_split "$pids")
  shards=$(shard_delta "$sh0" "$(shard_ticks "$setup" "$pids")")
  perf_finish
  local hwm; hwm=$(sum_status "$pids" VmHWM)
  if [ $rc != 0 ] || [ ! -s "$prefix.json" ]; then
    log "  $load $setup round $round: FAILED (rc $rc): $(tail -1 "$prefix.txt")"
    rm -f "$prefix.json"
    return 1
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$load" "$setup" "$prefix.json" $((u1 + k1 - u0 - k0)) "$hwm" "$TCK" \
    $((u1 - u0)) $((k1 - k0)) "$shards" >>"$TSV"
  log "  $load $setup r$round: $(python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); l=j["latency_us"]["corrected"]; print("%.0f req/s p50 %sus p99 %sus errors %s" % (j["rps"], l["p50"], l["p99"], j["errors_total"]))' "$prefix.json")${shards:+, responder shard ticks ${shards//,/\/}}"
}
rps_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["rps"])' "$1" 2>/dev/null || echo 0; }

D="-d ${DURATION}s --warmup ${WARMUP}s"
RATE_H2="" RATE_H1="" LOW_H2="" LOW_H1=""
half_of() { # load setups...: half the lowest round-1 req/s among the setups (at least 100)
  local load=$1 f=(); shift
  for s in "$@"; do f+=("$RES/runs/$load.$s.r1.json"); done
  python3 -c 'import json,sys
v=[]
for p in sys.argv[1:]:
    try: v.append(json.load(open(p))["rps"])
    except Exception: pass
print(max(100, int(0.5*min(v))) if v else 1000)' "${f[@]}"
}
has() { case " $LOADS " in *" $1 "*) return 0 ;; esac; return 1; }
for round in $(seq 1 "$ROUNDS"); do
  log "round $round/$ROUNDS"
  if has a; then for s in "${AB[@]}"; do run_load $round a $s --h2c -c 4 -m 32 $D "${URL_H2[$s]}/"; done; fi
  if has b; then for s in "${AB[@]}"; do run_load $round b $s --http1 -c 64 $D "${URL_H1[$s]}/"; done; fi
  if has c; then
    # 50 % of direct capacity for the same protocol, fixed from round 1 ...
    [ -z "$RATE_H2" ] && RATE_H2=$(half_of a direct)
    [ -z "$RATE_H1" ] && RATE_H1=$(half_of b direct)
    # ... and, since that can exceed what any proxy sustains, also 50 % of the slowest proxy's.
    # (c'): the slowest of the setups a target compares (nginx-2hop, a comparison only, is not
    # one of them and would move the rate between runs that have it and runs that do not)
    LOW_OF=(); for s in "${ACTIVE[@]}"; do [ "$s" = nginx-2hop ] || LOW_OF+=("$s"); done
    [ -z "$LOW_H2" ] && LOW_H2=$(half_of a "${LOW_OF[@]}")
    [ -z "$LOW_H1" ] && LOW_H1=$(half_of b "${LOW_OF[@]}")
    for s in "${ACTIVE[@]}"; do run_load $round c-h2 $s --h2c -c 4 -m 32 --rate "$RATE_H2" $D "${URL_H2[$s]}/"; done
    for s in "${ACTIVE[@]}"; do run_load $round c-h1 $s --http1 -c 64 --rate "$RATE_H1" $D "${URL_H1[$s]}/"; done
    for s in "${ACTIVE[@]}"; do run_load $round c-h2-low $s --h2c -c 4 -m 32 --rate "$LOW_H2" $D "${URL_H2[$s]}/"; done
    for s in "${ACTIVE[@]}"; do run_load $round c-h1-low $s --http1 -c 64 --rate "$LOW_H1" $D "${URL_H1[$s]}/"; done
  fi
  if has d; then for s in "${ACTIVE[@]}"; do run_load $round d $s --http1 -c 32 --connect-per-request $D "${URL_H1[$s]}/"; done; fi
  if has e; then
    for s in "${ACTIVE[@]}"; do run_load $round e-down $s --http1 -c 1 -n 1 --timeout 300s "${URL_H1[$s]}/bytes/$BULK"; done
    for s in "${ACTIVE[@]}"; do run_load $round e-up $s --http1 -c 1 -n 1 --timeout 300s --method POST --body-size "$BULK" "${URL_H1[$s]}/upload"; done
  fi
done
echo "$RATE_H2 $RATE_H1 $LOW_H2 $LOW_H1" >"$RES/open-loop-rates.txt"

# ---------------------------------------------------------------- --cross-check: standard tools
# The direct and nginx setups measured by h2load (load a: h2c -c 4 -m 32, one thread) and wrk
# (load b: HTTP/1.1 keep-alive -t 1 -c 64) beside loadgen with the same load, interleaved
# (loadgen, tool, loadgen, tool, …), against two backends: the bench's service (`loadgen serve`)
# and an nginx backend (1 worker, a fixed 64-byte response). The rtun setups join against the
# bench's service (their initiators route to it), so that rtun against nginx is also a ratio
# read by h2load and wrk, not by loadgen alone. CPU per request is utime+stime of
# the same processes (the proxy's, and the backend's) over the measured window of each client:
# after the warm-up of loadgen and h2load (both exclude it from their counts); wrk has no
# warm-up, so a separate 1 s wrk run warms up and the measured run is counted whole.
XC_TSV=$RES/xcheck.tsv
XC_BACKENDS=()
start_nginx_backend() {
  find_nginx || { note "cross-check: nginx backend unavailable (nginx not installed)"; return 1; }
  local d=$RES/nginx-backend; mkdir -p "$d"
  nginx_conf "$RES/conf/nginx-backend.conf" "$d" on "  default_type text/plain;
  server {
    listen 127.0.0.1:$P_NGB_H1;
    listen 127.0.0.1:$P_NGB_H2 http2;
    location / { return 200 \"$(printf '%064d' 0)\"; }
  }"
  "$NGINX" -c "$RES/conf/nginx-backend.conf" -p "$d" >"$RES/logs/nginx-backend.log" 2>&1 &
  local m=$!; PIDS+=($m)
  wait_port $P_NGB_H1 10 && wait_http 10 "http://127.0.0.1:$P_NGB_H1/" \
    || { note "cross-check: nginx backend did not start: $(tail -2 "$d/error.log" 2>/dev/null | tr '\n' ' ')"; return 1; }
  NGB_PIDS="$m $(pgrep -P "$m" | head -1)"
}
xc_tool() { # h2load|wrk: installed, or installed now (apt-get) unless --no-install
  local bin=$1 pkg=$1; [ "$1" = h2load ] && pkg=nghttp2-client
  command -v "$bin" >/dev/null && return 0
  if [ $INSTALL = 1 ]; then
    log "installing $pkg (apt-get)"
    (apt-get install -y "$pkg" || { apt-get update && apt-get install -y "$pkg"; }) >>"$RES/logs/xcheck-install.log" 2>&1
  fi
  command -v "$bin" >/dev/null || { note "cross-check: $bin unavailable (apt-get install -y $pkg)"; return 1; }
}
xc_run() { # round load setup backend client url proxy-pids service-pids [header]
  local round=$1 load=$2 setup=$3 backend=$4 client=$5 url=$6 ppids=$7 spids=$8
  local hdr=(); [ -n "${9:-}" ] && hdr=(-H "$9")
  local prefix=$RES/runs/xc.$load.$setup.$backend.$client.r$round t=$(( ${DURATION%.*} * 4 + 60 ))
  local lp rc p0 p1 s0 s1 wu_ms sh0 shards
  wu_ms=$(awk -v v="$WARMUP" 'BEGIN{printf "%d", v * 1000}')
  case $client in
    loadgen)
      local proto=(--h2c -c 4 -m 32); [ "$load" = b ] && proto=(--http1 -c 64)
      timeout $t "$LOADGEN" run --no-pin --max-errors 1% "${proto[@]}" $D "${hdr[@]}" --out "$prefix" "$url" >"$prefix.txt" 2>&1 &
      lp=$!; sleep_warmup $D ;;
    h2load)
      timeout $t h2load -t 1 -c 4 -m 32 -D "${DURATION}s" --warm-up-time "${wu_ms}ms" "${hdr[@]}" "$url" >"$prefix.txt" 2>&1 &
      lp=$!; sleep "$(awk -v v="$WARMUP" 'BEGIN{print v + 0.02}')" ;;
    wrk)
      timeout $t wrk -t 1 -c 64 -d 1s "${hdr[@]}" "$url" >"$prefix.warmup.txt" 2>&1
      timeout $t wrk -t 1 -c 64 -d "${DURATION%.*}s" --latency "${hdr[@]}" "$url" >"$prefix.txt" 2>&1 &
      lp=$! ;;
  esac
  p0=$(cpu_ticks "$ppids") s0=$(cpu_ticks "$spids")
  sh0=$(shard_ticks "$setup" "$ppids")   # rtun setups: the responder's split, as run_load's
  wait $lp; rc=$?
  p1=$(cpu_ticks "$ppids") s1=$(cpu_ticks "$spids")
  shards=$(shard_delta "$sh0" "$(shard_ticks "$setup" "$ppids")")
  if [ $rc != 0 ]; then
    log "  xcheck $load $setup/$backend $client r$round: FAILED (rc $rc): $(tail -1 "$prefix.txt")"
    return 1
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$load" "$setup" "$backend" "$client" "$prefix.txt" \
    $((p1 - p0)) $((s1 - s0)) "$TCK" "$shards" >>"$XC_TSV"
  log "  xcheck $load $setup/$backend $client r$round: $(python3 "$BENCH/report.py" --parse-client "$client" "$prefix.txt")${shards:+, responder shard ticks ${shards//,/\/}}"
}
if [ $XCHECK = 1 ]; then
  printf 'round\tload\tsetup\tbackend\tclient\toutput\tproxy_ticks\tservice_ticks\tclk_tck\tresponder_shard_ticks\n' >"$XC_TSV"
  XC_CLIENTS_A=(loadgen) XC_CLIENTS_B=(loadgen)
  xc_tool h2load && XC_CLIENTS_A+=(h2load)
  xc_tool wrk && XC_CLIENTS_B+=(wrk)
  declare -A XC_SVC_PIDS XC_H1 XC_H2
  XC_BACKENDS=(serve) XC_SVC_PIDS[serve]=$SVC_PID
  XC_H1[direct.serve]=http://127.0.0.1:$P_SVC XC_H2[direct.serve]=http://127.0.0.1:$P_SVC
  if start_nginx_backend; then
    XC_BACKENDS+=(nginx) XC_SVC_PIDS[nginx]=$NGB_PIDS
    XC_H1[direct.nginx]=http://127.0.0.1:$P_NGB_H1 XC_H2[direct.nginx]=http://127.0.0.1:$P_NGB_H2
    note "cross-check: nginx backend $("$NGINX" -v 2>&1 | sed 's/.*version: //'), 1 worker, fixed 64-byte response"
  fi
  XC_SETUPS=(direct)
  if [[ " ${ACTIVE[*]} " == *" nginx "* ]]; then
    XC_SETUPS+=(nginx)
    XC_H1[nginx.serve]=${URL_H1[nginx]} XC_H2[nginx.serve]=${URL_H2[nginx]}
    XC_H1[nginx.nginx]=http://127.0.0.1:$P_NGX_XH1 XC_H2[nginx.nginx]=http://127.0.0.1:$P_NGX_XH2
  else
    note "cross-check: the nginx setup is not running; direct only"
  fi
  for s in "${ACTIVE[@]}"; do
    case $s in rtun | rtun-pgo)
      XC_SETUPS+=("$s") XC_H1[$s.serve]=${URL_H1[$s]} XC_H2[$s.serve]=${URL_H2[$s]} ;;
    esac
  done
  log "cross-check: setups ${XC_SETUPS[*]}; backends ${XC_BACKENDS[*]}; (a) ${XC_CLIENTS_A[*]}; (b) ${XC_CLIENTS_B[*]}"
  for round in $(seq 1 "$ROUNDS"); do
    log "cross-check round $round/$ROUNDS"
    for load in a b; do
      for backend in "${XC_BACKENDS[@]}"; do
        for s in "${XC_SETUPS[@]}"; do
          [ -n "${XC_H1[$s.$backend]:-}" ] || continue   # rtun: the bench's service only
          ppids=""; [ "$s" = direct ] || ppids=${SPIDS[$s]}
          if [ $load = a ]; then clients=("${XC_CLIENTS_A[@]}") url=${XC_H2[$s.$backend]}/
          else clients=("${XC_CLIENTS_B[@]}") url=${XC_H1[$s.$backend]}/; fi
          for c in "${clients[@]}"; do
            xc_run "$round" $load "$s" "$backend" "$c" "$url" "$ppids" "${XC_SVC_PIDS[$backend]}" "${HDRS[$s]:-}"
          done
        done
      done
    done
  done
fi

# ---------------------------------------------------------------- (f) many hosts and scale
SWARM_JSON=$RES/swarm.tsv
printf 'scenario\tnodes\tconnected\tfailures\tconnect_s\trss_before_kib\trss_after_kib\tper_tunnel_b\tresponder_cpu_s\tswarm_cpu_s\tfailure_kinds\n' >"$SWARM_JSON"
start_swarm_responder() { # [name [tunnel-listener tls line]]
  local name=${1:-swarm} tls=${2:-}
  # The swarm dials every node at once and does not retry: the default cap on handshakes in
  # progress (256, which protects a real responder from a reconnect storm) would refuse most
  # of the burst, so the benchmark lifts it.
  cat >"$RES/conf/$name-responder.yaml" <<EOF
shards: $SHARDS
admin: { listen: 127.0.0.1:$P_SW_ADM }
responder:
  tunnel_listener:
    listen: 127.0.0.1:$P_SW_TUN
    max_tunnels: 20000
    max_handshakes_in_progress: 20000
    max_tunnels_per_node: 64
    ping_interval: 2s
$tls
  egress_listener:
    listen: 127.0.0.1:$P_SW_EGR
    routes: [{ prefix: / }]
EOF
  RUST_LOG=warn "$RTUN" run -c "$RES/conf/$name-responder.yaml" >>"$RES/logs/$name-responder.log" 2>&1 &
  SW_RESP=$!; PIDS+=($SW_RESP)
  wait_port $P_SW_EGR 10 && wait_port $P_SW_TUN 10
}
start_swarm() { # nodes hold_s tag [more loadgen swarm args]
  "$LOADGEN" swarm --responder "127.0.0.1:$P_SW_TUN" --nodes "$1" --hold "$2s" --out "$RES/swarm-$3.json" "${@:4}" \
    >"$RES/logs/swarm-$3.log" 2>&1 &
  SW_PID=$!; PIDS+=($SW_PID)
  local i
  for i in $(seq 1 600); do
    grep -q 'tunnels connected' "$RES/logs/swarm-$3.log" 2>/dev/null && return 0
    kill -0 $SW_PID 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}
swarm_row() { # tag nodes rss_before rss_after [responder CPU ticks, swarm CPU ticks while connecting]
  python3 - "$RES/swarm-$1.json" "$1" "$2" "$3" "$4" "$TCK" "${5:-}" "${6:-}" >>"$SWARM_JSON" <<'EOF'
import json, sys
j = json.load(open(sys.argv[1])); b, a, n = int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[3])
per = (a - b) * 1024 / max(1, j["tunnels_connected"])
cpu = [f"{int(t) / int(sys.argv[6]):.2f}" if t else "-" for t in sys.argv[7:9]]
kinds = ",".join(f"{k}={v}" for k, v in sorted(j["failures"].items())) or "-"
print(f"{sys.argv[2]}\t{n}\t{j['tunnels_connected']}\t{j['failures_total']}\t{j['connect_all_s']:.3f}\t{b}\t{a}\t{per:.0f}\t{cpu[0]}\t{cpu[1]}\t{kinds}")
EOF
}
if [[ " ${ACTIVE[*]} " == *" rtun "* ]] && { has f || has scale; }; then
  if has f; then
    log "(f) many hosts: $SWARM_NODES simulated initiators"
    if start_swarm_responder; then
      sleep 0.5; rb=$(sum_status $SW_RESP VmRSS)
      hold=$(( (${DURATION%.*} + 3) * 2 * ROUNDS + 30 ))
      if start_swarm $SWARM_NODES $hold f; then
        sleep 1; ra=$(sum_status $SW_RESP VmRSS)
        swarm_row f $SWARM_NODES "$rb" "$ra"
        log "  $(grep 'tunnels connected' "$RES/logs/swarm-f.log")"
        URL_H2[rtun-1host]=http://127.0.0.1:$P_SW_EGR HDRS[rtun-1host]="x-node-id: edge-0" SPIDS[rtun-1host]=$SW_RESP
        URL_H2[rtun-${SWARM_NODES}hosts]=http://127.0.0.1:$P_SW_EGR HDRS[rtun-${SWARM_NODES}hosts]="x-node-id: edge-{0..$((SWARM_NODES-1))}"
        SPIDS[rtun-${SWARM_NODES}hosts]=$SW_RESP
        EXPECTED+=(rtun-1host "rtun-${SWARM_NODES}hosts")
        for round in $(seq 1 "$ROUNDS"); do
          for s in rtun-1host "rtun-${SWARM_NODES}hosts"; do run_load $round f $s --h2c -c 4 -m 32 $D "${URL_H2[$s]}/"; done
        done
      else
        note "swarm for (f) failed: $(tail -2 "$RES/logs/swarm-f.log" | tr '\n' ' ')"; EXPECTED+=(rtun-1host)
      fi
      stop_pid $SW_PID; stop_pid $SW_RESP
    else
      note "swarm responder did not start"; EXPECTED+=(rtun-1host)
    fi
  fi
  if has scale; then
    log "scale: $SCALE_NODES idle tunnels to a fresh responder"
    if start_swarm_responder; then
      sleep 0.5; rb=$(sum_status $SW_RESP VmRSS)
      if start_swarm $SCALE_NODES 20 scale; then
        sleep 3; ra=$(sum_status $SW_RESP VmRSS)   # idle: a PING round has passed
        swarm_row scale $SCALE_NODES "$rb" "$ra"
        log "  $(grep 'tunnels connected' "$RES/logs/swarm-scale.log")"
      else
        note "swarm for the scale scenario failed: $(tail -2 "$RES/logs/swarm-scale.log" | tr '\n' ' ')"
      fi
      stop_pid $SW_PID; stop_pid $SW_RESP
    fi
  fi
fi

# ---------------------------------------------------------------- tls-rate: handshakes per second
# A fresh $SHARDS-shard responder per variant, plaintext then mutual TLS (make_pki's CA and
# P-256 certificates; the swarm presents initiator.pem in every handshake), each dialed once by
# TLS_RATE_NODES simulated initiators: new tunnels per second = nodes / time to connect all,
# and the CPU of the responder and of the swarm (the client side) over that time.
if has tls-rate; then
  log "tls-rate: $TLS_RATE_NODES new tunnels, plaintext then mutual TLS, $SHARDS shards"
  K=$RES/conf/pki
  if [ -f "$K/initiator-key.pem" ] || make_pki "$K"; then
    for v in plain mtls; do
      tag=tls-rate-$v tls="" args=()
      if [ $v = mtls ]; then
        tls="    tls: { cert: $K/responder.pem, key: $K/responder-key.pem, client_ca: $K/ca.pem }"
        args=(--tls-ca "$K/ca.pem" --tls-cert "$K/initiator.pem" --tls-key "$K/initiator-key.pem")
      fi
      if start_swarm_responder "$tag" "$tls"; then
        sleep 0.5; rb=$(sum_status $SW_RESP VmRSS); c0=$(cpu_ticks $SW_RESP)
        if start_swarm $TLS_RATE_NODES 5 "$tag" "${args[@]}"; then
          c1=$(cpu_ticks $SW_RESP) cs=$(cpu_ticks $SW_PID)   # the swarm's CPU so far: dialing
          sleep 2.5; ra=$(sum_status $SW_RESP VmRSS)   # a PING round has passed
          swarm_row "$tag" $TLS_RATE_NODES "$rb" "$ra" $((c1 - c0)) "$cs"
          log "  $v: $(grep 'tunnels connected' "$RES/logs/swarm-$tag.log")"
        else
          note "swarm for tls-rate ($v) failed: $(tail -2 "$RES/logs/swarm-$tag.log" | tr '\n' ' ')"
        fi
        stop_pid $SW_PID; stop_pid $SW_RESP
      else
        note "tls-rate: the $v responder did not start (see logs/$tag-responder.log)"
      fi
    done
  else
    note "tls-rate: openssl could not make certificates (see logs/pki.log)"
  fi
fi

# ---------------------------------------------------------------- report
ELAPSED=$(( $(date +%s) - START_TS ))
python3 "$BENCH/report.py" --results "$RES" --loadgen "$LOADGEN" --rounds "$ROUNDS" \
  --duration "$DURATION" --bulk "$BULK" --shards "$SHARDS" --elapsed "$ELAPSED" \
  --quick "$QUICK" --perf "$PERF" --expected "${EXPECTED[*]}" --skipped "${SKIPPED[*]:-}"
