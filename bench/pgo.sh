#!/usr/bin/env bash
# Profile-guided build of rtun: the release build for production.
#
#   bench/pgo.sh [--check]
#
# 1. builds rtun instrumented (-Cprofile-generate) and loadgen plain, under target/pgo/;
# 2. trains: runs a responder and an initiator (two shards each) over loopback in front of
#    `loadgen serve`, and drives them with loadgen only (h2 multiplexed and HTTP/1.1, closed
#    and open loop, request bodies both ways, a bulk download), then stops both with SIGTERM
#    so that they write their profiles;
# 3. merges the profiles (llvm-profdata, from rustup's llvm-tools component) into
#    target/pgo/rtun.profdata and rebuilds rtun with -Cprofile-use;
# 4. checks the result: a request through a responder and an initiator of the new binary.
# The binary is target/pgo/rtun. --check only says whether this machine can build it.
#
# Why: rtun's request path is branchy library code (h2, hyper, http) that a profile lays out
# far better than static heuristics: bench/README.md "Finding: a profile-guided build" has the
# measurements. The training loads are loadgen's, not the benchmark's clients (h2load, wrk),
# and other concurrencies and rates than the benchmark's loads (a)-(e).
# Takes about ten minutes on 2 cores (two release builds with fat LTO). Everything listens on
# 127.0.0.1; every process started here is killed on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/target/pgo
HOST=$(rustc -vV | sed -n 's/^host: //p')
PROFDATA=$(rustc --print sysroot)/lib/rustlib/$HOST/bin/llvm-profdata
if [ ! -x "$PROFDATA" ]; then
  echo "pgo: llvm-profdata is missing: rustup component add llvm-tools" >&2
  exit 1
fi
[ "${1:-}" = --check ] && { echo "pgo: can build ($PROFDATA)"; exit 0; }
for tool in curl python3; do
  command -v $tool >/dev/null || { echo "pgo: $tool is needed" >&2; exit 1; }
done

mkdir -p "$OUT"
rm -rf "$OUT/profiles" "$OUT/train" && mkdir -p "$OUT/profiles" "$OUT/train"
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill -KILL "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
log() { echo "pgo: $*" >&2; }

# Each build has its own target directory: RUSTFLAGS differ, and the plain build in target/
# stays as it is. Build scripts and proc macros of the instrumented build write profiles of
# their own into gen-raw/ (unused: only rtun's, named by LLVM_PROFILE_FILE below, are merged).
log "building rtun instrumented (target/pgo/gen)"
(cd "$ROOT" && RUSTFLAGS="-Cprofile-generate=$OUT/gen-raw" \
  cargo build --release --locked -p rtun --bin rtun --target-dir "$OUT/gen") >"$OUT/build-gen.log" 2>&1 \
  || { tail -20 "$OUT/build-gen.log" >&2; log "instrumented build failed"; exit 1; }
log "building loadgen (${CARGO_TARGET_DIR:-target}/release)"
(cd "$ROOT" && cargo build --release --locked -p loadgen) >"$OUT/build-loadgen.log" 2>&1 \
  || { tail -20 "$OUT/build-loadgen.log" >&2; log "loadgen build failed"; exit 1; }
# Where that build put it: cargo honours CARGO_TARGET_DIR (bench/run.sh exports it).
LOADGEN=${CARGO_TARGET_DIR:-$ROOT/target}/release/loadgen

# shellcheck source=bench/roles.sh
. "$ROOT/bench/roles.sh"
# Starts `loadgen serve` and the two roles of binary $1 under directory $2; sets EGR, R, I.
start_roles() {
  local bin=$1 dir=$2 svc tun
  svc=$(free_port) tun=$(free_port) EGR=$(free_port)
  "$LOADGEN" serve --listen 127.0.0.1:$svc >"$dir/serve.log" 2>&1 & PIDS+=($!)
  roles_config "$dir" rtun 2 "$svc" "$tun" "$EGR" pgo-node
  roles_start "$bin" "$dir" rtun "$dir"
  R=$ROLE_R I=$ROLE_I
  roles_ready "http://127.0.0.1:$EGR/" pgo-node 10 && return 0
  log "the roles did not come up; logs in $dir"; tail -5 "$dir"/*.log >&2; return 1
}
stop_roles() { # SIGTERM: the roles drain and exit, and the profile runtime writes at exit
  kill -TERM "$R" "$I"
  for _ in $(seq 1 200); do
    kill -0 "$R" 2>/dev/null || kill -0 "$I" 2>/dev/null || return 0
    sleep 0.1
  done
  log "the roles did not stop within 20 s"; return 1
}

log "training (about a minute)"
LLVM_PROFILE_FILE="$OUT/profiles/rtun-%p.profraw" start_roles "$OUT/gen/release/rtun" "$OUT/train"
U="http://127.0.0.1:$EGR/" H='x-node-id: pgo-node'
train() { "$LOADGEN" run --max-errors 1% -H "$H" "$@" >>"$OUT/train/load.log" 2>&1 || { log "training load failed: $*"; tail -20 "$OUT/train/load.log" >&2; exit 1; }; }
train --h2c -c 8 -m 16 -d 8s "$U"
train --http1 -c 48 -d 8s "$U"
train --h2c -c 2 -m 8 --rate 6000 -d 5s "$U"
train --http1 -c 32 --rate 6000 -d 5s "$U"
train --http1 -c 8 --method POST --body-size 16384 -d 3s "${U}upload"
train --h2c -c 2 -m 4 --method POST --body-size 65536 -d 3s "${U}upload"
train --http1 -c 1 -n 4 "${U}bytes/67108864"
stop_roles
ls "$OUT"/profiles/*.profraw >/dev/null 2>&1 || { log "the roles wrote no profile"; exit 1; }
"$PROFDATA" merge -o "$OUT/rtun.profdata" "$OUT"/profiles/*.profraw

log "building rtun with the profile (target/pgo/use)"
(cd "$ROOT" && RUSTFLAGS="-Cprofile-use=$OUT/rtun.profdata" \
  cargo build --release --locked -p rtun --bin rtun --target-dir "$OUT/use") >"$OUT/build-use.log" 2>&1 \
  || { tail -20 "$OUT/build-use.log" >&2; log "optimised build failed"; exit 1; }
cp "$OUT/use/release/rtun" "$OUT/rtun"

log "checking target/pgo/rtun"
mkdir -p "$OUT/check" && start_roles "$OUT/rtun" "$OUT/check"
body=$(curl -fsS -m 5 -H 'x-node-id: pgo-node' "http://127.0.0.1:$EGR/")
[ ${#body} = 64 ] || { log "the check request returned ${#body} bytes, not 64"; exit 1; }
stop_roles
log "done: target/pgo/rtun ($(du -h "$OUT/rtun" | cut -f1)), profile target/pgo/rtun.profdata"
