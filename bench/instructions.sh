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
cleanup() { for p in "${PIDS[@]:-}"; do kill -KILL "$p" 2>/dev/null || true; done; wait 2>/dev/null; [ -n "${KEEP:-}" ] && echo "kept $DIR" || rm -rf "$DIR"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
SVC=$(port) TUN=$(port) EGR=$(port)
cat >"$DIR/r.yaml" <<YAML
shards: 1
responder:
  tunnel_listener: { listen: 127.0.0.1:$TUN }
  egress_listener: { listen: 127.0.0.1:$EGR }
YAML
cat >"$DIR/i.yaml" <<YAML
shards: 1
clusters:
  service: { endpoints: ["127.0.0.1:$SVC"], max_idle_per_shard: 256 }
  responder: { endpoints: ["127.0.0.1:$TUN"] }
initiator:
  tunnels: ["rc://bench-node:bench:bench@responder:1"]
  routes: [{ prefix: /, cluster: service }]
YAML
"$LOADGEN" serve --listen 127.0.0.1:$SVC --threads 1 >"$DIR/svc.log" 2>&1 & PIDS+=($!)
# rtun re-executes itself to add glibc's cache count to GLIBC_TUNABLES unless the
# environment names it (src/malloc_cache.rs); under valgrind it does not (that would leave
# valgrind): name it here, so that the count is the one rtun runs with.
TUNABLES=${RTUN_GLIBC_TUNABLES:-glibc.malloc.tcache_count=64}
for role in r i; do
  GLIBC_TUNABLES=$TUNABLES valgrind --tool=callgrind --callgrind-out-file="$DIR/$role.%p.cg" --dump-instr=no --compress-strings=no \
    "$RTUN" run -c "$DIR/$role.yaml" >"$DIR/$role.log" 2>&1 & PIDS+=($!)
done
R_PID=${PIDS[1]} I_PID=${PIDS[2]}
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
  ls "$DIR"/r.*.cg.* "$DIR"/i.*.cg.* >/dev/null 2>&1 && break
  sleep 0.1
done
sleep 0.5
# A dump holds the events since the last zeroing: the N measured requests.
ir_of() { cat "$DIR"/"$1".*.cg.* 2>/dev/null | sed -n 's/^summary: *\([0-9]*\).*/\1/p' | awk '{s+=$1} END {print s+0}'; }
per() { python3 -c "print(f'{$1/$N:,.0f}')"; }
R=$(ir_of r) I=$(ir_of i)
echo "instructions per request ($PROTO, $RTUN): responder $(per "$R"), initiator $(per "$I"), total $(per $((R + I)))"
