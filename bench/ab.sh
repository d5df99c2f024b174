#!/usr/bin/env bash
# A/B of two rtun builds on the same machine, interleaved: each round runs load (a) h2
# multiplexed (`h2load -c 4 -m 32`) and (b) HTTP/1.1 keep-alive (`wrk -t 1 -c 64`) through
# responder + initiator of build A, then of build B, against one `loadgen serve` backend.
# Per run it reports req/s, CPU µs per request of both rtun processes (utime+stime from /proc
# over the measured window) and, when perf can count tracepoints, syscalls per request of both
# processes (`perf stat -e raw_syscalls:sys_enter`, same window). Medians over the rounds.
#
#   bench/ab.sh RTUN_A RTUN_B [ROUNDS] [SECONDS]
#
# LOADGEN (default target/release/loadgen) serves; SHARDS (default 2) per rtun process.
# Everything listens on 127.0.0.1; every process started here is killed on exit.
set -euo pipefail
A=${1:?usage: bench/ab.sh RTUN_A RTUN_B [ROUNDS] [SECONDS]}
B=${2:?usage: bench/ab.sh RTUN_A RTUN_B [ROUNDS] [SECONDS]}
ROUNDS=${3:-3}
SECS=${4:-6}
SHARDS=${SHARDS:-2}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
LOADGEN=${LOADGEN:-$ROOT/target/release/loadgen}
for tool in h2load wrk curl python3; do
  command -v $tool >/dev/null || { echo "ab: $tool is needed" >&2; exit 1; }
done
PERF=0
if command -v perf >/dev/null && perf stat -e raw_syscalls:sys_enter -- true >/dev/null 2>&1; then PERF=1; fi
DIR=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -n "${KEEP:-}" ] && echo "kept $DIR" >&2 || rm -rf "$DIR"
}
trap cleanup EXIT
# shellcheck source=bench/roles.sh
. "$ROOT/bench/roles.sh"
ticks() { local t=0 p; for p in $1; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }
HZ=$(getconf CLK_TCK)

SVC=$(free_port)
"$LOADGEN" serve --listen "127.0.0.1:$SVC" >"$DIR/serve.log" 2>&1 &
PIDS+=($!)

start() { # name binary: sets EGR_<name>, R<name>, I<name>
  local name=$1 bin=$2 tun egr
  tun=$(free_port) egr=$(free_port)
  roles_config "$DIR" "$name" "$SHARDS" "$SVC" "$tun" "$egr" ab-node
  roles_start "$bin" "$DIR" "$name" "$DIR"
  roles_ready "http://127.0.0.1:$egr/" ab-node \
    || { echo "ab: build $name did not answer" >&2; tail -5 "$DIR/$name"-*.log >&2; exit 1; }
  printf -v "EGR_$name" %s "$egr"; printf -v "R$name" %s "$ROLE_R"; printf -v "I$name" %s "$ROLE_I"
}

start A "$A"
start B "$B"
RES=$DIR/results.tsv
: >"$RES"

measure() { # build load egress pids
  local build=$1 load=$2 egr=$3 pids=$4 out t0 t1 reqs perfpid="" sys=""
  local csv=$DIR/perf.csv
  if [ "$load" = a ]; then
    # Warm-up 1 s inside h2load's own run (-D with --warm-up-time); the window is the rest.
    h2load -c 4 -m 32 -t 1 --warm-up-time=1 -D "$SECS" -H 'x-node-id: ab-node' \
      "http://127.0.0.1:$egr/" >"$DIR/out" 2>&1 &
  else
    wrk -t 1 -c 64 -d 1 -H 'x-node-id: ab-node' "http://127.0.0.1:$egr/" >/dev/null 2>&1
    wrk -t 1 -c 64 -d "$SECS" -H 'x-node-id: ab-node' "http://127.0.0.1:$egr/" >"$DIR/out" 2>&1 &
  fi
  local client=$!
  [ "$load" = a ] && sleep 1
  t0=$(ticks "$pids")
  if [ "$PERF" = 1 ]; then
    perf stat -x, -e raw_syscalls:sys_enter -p "${pids// /,}" -o "$csv" -- sleep $((SECS - 1)) &
    perfpid=$!
  fi
  sleep $((SECS - 1))
  t1=$(ticks "$pids")
  [ -n "$perfpid" ] && wait "$perfpid" || true
  wait "$client"
  if [ "$load" = a ]; then
    reqs=$(awk '/finished in/ {gsub(",","",$0); for (i=1;i<=NF;i++) if ($i=="req/s") print $(i-1)}' "$DIR/out")
  else
    reqs=$(awk '/Requests\/sec/ {print $2}' "$DIR/out")
  fi
  [ -n "$perfpid" ] && sys=$(awk -F, '/raw_syscalls/ {print $1}' "$csv")
  python3 - "$build" "$load" "$reqs" "$t0" "$t1" "$HZ" "$((SECS - 1))" "${sys:-}" >>"$RES" <<'PY'
import sys
build, load, rps, t0, t1, hz, window, sysc = sys.argv[1:]
rps = float(rps or 0)
cpu_s = (int(t1) - int(t0)) / int(hz)
us = cpu_s / (rps * int(window)) * 1e6 if rps else float("nan")
per = (int(sysc) / (rps * int(window))) if (sysc and rps) else float("nan")
print(f"{build}\t{load}\t{rps:.0f}\t{us:.1f}\t{per:.2f}")
PY
}

for round in $(seq 1 "$ROUNDS"); do
  for load in a b; do
    # Alternate which build goes first: the second run of a pair has measured up to 30 %
    # slower or faster on this shared machine, whichever build it was.
    if [ $((round % 2)) = 1 ]; then
      measure A "$load" "$EGR_A" "$RA $IA"
      measure B "$load" "$EGR_B" "$RB $IB"
    else
      measure B "$load" "$EGR_B" "$RB $IB"
      measure A "$load" "$EGR_A" "$RA $IA"
    fi
  done
  echo "ab: round $round/$ROUNDS done" >&2
done

python3 - "$RES" "$A" "$B" "$PERF" <<'PY'
import statistics, sys
path, a, b, perf = sys.argv[1:]
rows = [l.split("\t") for l in open(path).read().splitlines() if l]
def med(build, load, col):
    vals = [float(r[col]) for r in rows if r[0] == build and r[1] == load]
    return statistics.median(vals) if vals else float("nan")
print(f"A = {a}\nB = {b}\n")
print("| load | A req/s | B req/s | B/A | A CPU µs/req | B CPU µs/req | B/A | A syscalls/req | B syscalls/req |")
print("|---|---|---|---|---|---|---|---|---|")
for load, name in (("a", "(a) h2 h2load -c4 -m32"), ("b", "(b) HTTP/1.1 wrk -c64")):
    ra, rb = med("A", load, 2), med("B", load, 2)
    ca, cb = med("A", load, 3), med("B", load, 3)
    sa, sb = med("A", load, 4), med("B", load, 4)
    print(f"| {name} | {ra:.0f} | {rb:.0f} | {rb/ra:.2f} | {ca:.1f} | {cb:.1f} | {cb/ca:.2f} | {sa:.2f} | {sb:.2f} |")
if perf != "1":
    print("\n(perf cannot count raw_syscalls:sys_enter here: syscalls not measured)")
PY
