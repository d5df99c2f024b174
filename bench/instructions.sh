#!/usr/bin/env bash
# Instructions per request of rtun (responder + initiator), counted by callgrind: repeatable
# for the same binary and load whatever else the machine is doing, so two builds can be
# compared on a busy 2-core machine where CPU-time figures drift.
#
#   bench/instructions.sh RTUN_BINARY [h2|h1] [N]
#
# Runs each role with one shard under `valgrind --tool=callgrind`, warms up with 200 requests,
# zeroes the counters, sends N requests through the tunnel with loadgen
# (target/release/loadgen, or $LOADGEN), and reports the instructions each process executed
# per request (start-up and tunnel set-up are excluded).
# Everything listens on 127.0.0.1; every process is killed on exit. RTUN_GLIBC_TUNABLES sets
# GLIBC_TUNABLES for both roles (default: the cache count rtun runs with).
set -euo pipefail
RTUN=${1:?usage: bench/instructions.sh RTUN_BINARY [h2|h1] [N]}
PROTO=${2:-h2}
N=${3:-4000}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOADGEN=${LOADGEN:-$ROOT/target/release/loadgen}
command -v valgrind >/dev/null || { echo "instructions: valgrind is needed" >&2; exit 1; }
DIR=$(mktemp -d)
PIDS=()
cleanup() {
  # (stderr off: bash would report each killed role as a job killed in roles_start)
  { for p in "${PIDS[@]:-}"; do kill -KILL "$p" || true; done; wait; } 2>/dev/null
  [ -n "${KEEP:-}" ] && echo "kept $DIR" || rm -rf "$DIR"
}
trap cleanup EXIT
# shellcheck source=bench/roles.sh
. "$ROOT/bench/roles.sh"
SVC=$(free_port) TUN=$(free_port) EGR=$(free_port)
roles_config "$DIR" rtun 1 "$SVC" "$TUN" "$EGR" bench-node
"$LOADGEN" serve --listen 127.0.0.1:$SVC --threads 1 >"$DIR/svc.log" 2>&1 & PIDS+=($!)
# rtun re-executes itself to add glibc's cache count to GLIBC_TUNABLES unless the
# environment names it (src/malloc_cache.rs); under valgrind it does not (that would leave
# valgrind): name it here, so that the count is the one rtun runs with. Each role's dump is
# named after it (valgrind expands %q{RTUN_BENCH_ROLE}, which roles_start sets).
TUNABLES=${RTUN_GLIBC_TUNABLES:-glibc.malloc.tcache_count=64}
roles_start "$RTUN" "$DIR" rtun "$DIR" env GLIBC_TUNABLES="$TUNABLES" valgrind --tool=callgrind \
  --callgrind-out-file="$DIR/%q{RTUN_BENCH_ROLE}.%p.cg" --dump-instr=no --compress-strings=no
R_PID=$ROLE_R I_PID=$ROLE_I
flags=(--h2c -c 2 -m 16); [ "$PROTO" = h1 ] && flags=(--http1 -c 16)
run() { "$LOADGEN" run "${flags[@]}" --threads 1 -n "$1" --timeout 60s \
          -H 'x-node-id: bench-node' "http://127.0.0.1:$EGR/" >"$DIR/load.log" 2>&1; }
for _ in $(seq 1 600); do run 10 && break; sleep 0.2; done
run 200                                  # warm up: pools filled, tables grown
callgrind_control -z "$R_PID" >/dev/null 2>&1; callgrind_control -z "$I_PID" >/dev/null 2>&1
run "$N"
callgrind_control -d "$R_PID" >/dev/null 2>&1; callgrind_control -d "$I_PID" >/dev/null 2>&1
# callgrind writes a dump when the process next runs its scheduler: wait for both (a missing
# one used to end the script silently under `set -e`).
for _ in $(seq 1 300); do
  ls "$DIR"/responder.*.cg.* "$DIR"/initiator.*.cg.* >/dev/null 2>&1 && break
  sleep 0.1
done
sleep 0.5
# A dump holds the events since the last zeroing: the N measured requests.
ir_of() { cat "$DIR"/"$1".*.cg.* 2>/dev/null | sed -n 's/^summary: *\([0-9]*\).*/\1/p' | awk '{s+=$1} END {print s+0}'; }
per() { python3 -c "print(f'{$1/$N:,.0f}')"; }
R=$(ir_of responder) I=$(ir_of initiator)
echo "instructions per request ($PROTO, $RTUN): responder $(per "$R"), initiator $(per "$I"), total $(per $((R + I)))"
