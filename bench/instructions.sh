#!/usr/bin/env bash
# Instructions per request of rtun (responder + initiator), counted by callgrind: repeatable
# for the same binary and load whatever else the machine is doing, so two builds can be
# compared on a busy 2-core machine where CPU-time figures drift.
#
#   bench/instructions.sh RTUN_BINARY|nginx [h2|h1] [N]
#
# `nginx` instead of a binary counts the baseline the same way: the bench's nginx proxy (one
# worker, here without a master, an upstream keep-alive pool; bench/nginx.sh) in front of the
# same service, under the same load, so that rtun's two processes compare with nginx's one.
# Runs each role with one shard under `valgrind --tool=callgrind`, warms up with 200 requests,
# zeroes the counters, sends N requests through the tunnel with loadgen
# (target/release/loadgen, or $LOADGEN), and reports the instructions each process executed
# per request (start-up and tunnel set-up are excluded).
# RATE=R sends the measured requests in open loop at R req/s instead of as fast as the processes
# answer: below saturation each wakeup carries few requests (bench/README.md, "below
# saturation").
# TOP=K also prints where each process's instructions go: by crate, then its K costliest
# functions (bench/callgrind.py).
# Everything listens on 127.0.0.1; every process is killed on exit. RTUN_GLIBC_TUNABLES sets
# GLIBC_TUNABLES for both roles (default: the cache count rtun runs with).
set -euo pipefail
RTUN=${1:?usage: bench/instructions.sh RTUN_BINARY|nginx [h2|h1] [N]}
PROTO=${2:-h2}
N=${3:-4000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOADGEN=${LOADGEN:-$ROOT/target/release/loadgen}
command -v valgrind >/dev/null || { echo "instructions: valgrind is needed" >&2; exit 1; }
DIR=$(mktemp -d)
PIDS=()
cleanup() {
  # Each process is waited for by its pid, which marks its job as reported. A bare `wait`
  # leaves the job started last ($!: the initiator, or nginx) unreported when it had died
  # before `wait` got to it (POSIX keeps $!'s status), and bash printed "Killed" for it at the
  # next external command (the rm below), outside this redirection.
  { for p in "${PIDS[@]:-}"; do kill -KILL "$p" || true; done
    for p in "${PIDS[@]:-}"; do wait "$p" || true; done; } 2>/dev/null
  [ -n "${KEEP:-}" ] && echo "kept $DIR" || rm -rf "$DIR"
}
trap cleanup EXIT
# shellcheck source=bench/roles.sh
. "$ROOT/bench/roles.sh"
# shellcheck source=bench/nginx.sh
. "$ROOT/bench/nginx.sh"
SVC=$(free_port) TUN=$(free_port) EGR=$(free_port)
"$LOADGEN" serve --listen 127.0.0.1:$SVC --threads 1 >"$DIR/svc.log" 2>&1 & PIDS+=($!)
CG=(valgrind --tool=callgrind --dump-instr=no --compress-strings=no)
if [ "$RTUN" = nginx ]; then
  NGINX=$(command -v nginx || echo /usr/sbin/nginx)
  [ -x "$NGINX" ] || { echo "instructions: nginx is not installed" >&2; exit 1; }
  listen="127.0.0.1:$EGR"; [ "$PROTO" = h2 ] && listen="$listen http2"
  # bench/nginx.sh: run.sh's nginx, one server of it, in one process (no master) under callgrind
  nginx_conf "$DIR/nginx.conf" "$DIR" off "$(nginx_upstream service "$SVC")
$(nginx_proxy_server "$listen" service)"
  "${CG[@]}" --callgrind-out-file="$DIR/nginx.%p.cg" "$NGINX" -c "$DIR/nginx.conf" -p "$DIR" \
    >"$DIR/nginx.log" 2>&1 & PIDS+=($!)
  ROLES=(nginx) PROCS=($!)
else
  roles_config "$DIR" rtun 1 "$SVC" "$TUN" "$EGR" bench-node
  # rtun re-executes itself to add glibc's cache count to GLIBC_TUNABLES unless the
  # environment names it (src/malloc_cache.rs); under valgrind it does not (that would leave
  # valgrind): name it here, so that the count is the one rtun runs with. Each role's dump is
  # named after it (valgrind expands %q{RTUN_BENCH_ROLE}, which roles_start sets).
  TUNABLES=${RTUN_GLIBC_TUNABLES:-glibc.malloc.tcache_count=64}
  roles_start "$RTUN" "$DIR" rtun "$DIR" env GLIBC_TUNABLES="$TUNABLES" "${CG[@]}" \
    --callgrind-out-file="$DIR/%q{RTUN_BENCH_ROLE}.%p.cg"
  ROLES=(responder initiator) PROCS=("$ROLE_R" "$ROLE_I")
fi
flags=(--h2c -c 2 -m 16); [ "$PROTO" = h1 ] && flags=(--http1 -c 16)
# RATE (above): the measured run only; the warm-up stays closed loop.
[ -n "${RATE:-}" ] && measure=(--rate "$RATE") || measure=()
run() { "$LOADGEN" run "${flags[@]}" --threads 1 -n "$1" --timeout 60s "${@:2}" \
          -H 'x-node-id: bench-node' "http://127.0.0.1:$EGR/" >"$DIR/load.log" 2>&1; }
for _ in $(seq 1 600); do run 10 && break; sleep 0.2; done
run 200                                  # warm up: pools filled, tables grown
for p in "${PROCS[@]}"; do callgrind_control -z "$p" >/dev/null 2>&1; done
run "$N" "${measure[@]}"
for p in "${PROCS[@]}"; do callgrind_control -d "$p" >/dev/null 2>&1; done
# callgrind writes a dump when the process next runs its scheduler: wait for every one (a
# missing one used to end the script silently under `set -e`).
dumped() { for r in "${ROLES[@]}"; do ls "$DIR/$r".*.cg.* >/dev/null 2>&1 || return 1; done; }
for _ in $(seq 1 300); do dumped && break; sleep 0.1; done
sleep 0.5
# A dump holds the events since the last zeroing: the N measured requests.
ir_of() { cat "$DIR"/"$1".*.cg.* 2>/dev/null | sed -n 's/^summary: *\([0-9]*\).*/\1/p' | awk '{s+=$1} END {print s+0}'; }
per() { python3 -c "print(f'{$1/$N:,.0f}')"; }
line="" total=0
for r in "${ROLES[@]}"; do
  ir=$(ir_of "$r"); total=$((total + ir)); line="$line$r $(per "$ir"), "
done
echo "instructions per request ($PROTO${RATE:+ at $RATE req/s}, $RTUN): ${line}total $(per "$total")"
# TOP=K: where each process's instructions go (by crate, then its K costliest functions).
if [ -n "${TOP:-}" ]; then
  for r in "${ROLES[@]}"; do
    echo "$r:"
    python3 "$ROOT/bench/callgrind.py" "$N" "$TOP" "$DIR/$r".*.cg.*
  done
fi
