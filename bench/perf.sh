# shellcheck shell=bash
# bench/run.sh --perf: syscalls per request and CPU profiles of the proxy processes, measured by
# `perf` inside a measured load run (loads a and b, last round). Sourced by bench/run.sh, which
# provides RES, DURATION, SPIDS, SVC_PID, the ports, log/note and PIDS; see bench/README.md,
# "Syscalls and profiles (--perf)".
#
# Per perf'd run, two windows one after the other inside loadgen's measured window:
#   1. `perf stat --per-thread -e raw_syscalls:sys_enter,task-clock -p PIDS`
#   2. `perf record -e cpu-clock -F 499 -g -p PID`, one per process
# Both are attached when loadgen starts, with their events disabled (-D -1); their workload
# (perf_window) enables and disables them through --control fifos at the planned times, stamps
# the window's start and end, and reads the setup's own request counter just outside both ends
# where it has one (rtun: the responder's rtun_requests_total{listener="egress"}; nginx:
# stub_status), so the request rate of that window is known; report.py falls back to loadgen's
# req/s × window otherwise.
# Raw files go to $RES/perf/; $RES/perf.tsv indexes them; report.py turns them into the report.

PERF_OK=0 PERF_EVENTS="raw_syscalls:sys_enter,task-clock" PERF_HW="not supported"
PERF_DIR=$RES/perf
PERF_TSV=$RES/perf.tsv

# Checks that perf exists and may count and sample; on failure logs one line and leaves
# PERF_OK=0 (the bench goes on without it).
perf_init() {
  mkdir -p "$PERF_DIR"
  if ! command -v perf >/dev/null; then
    note "--perf: perf not found (apt-get install -y linux-perf); no syscall counts or profiles"
    return 1
  fi
  local out
  if ! out=$(perf stat -x, -e "$PERF_EVENTS" -- true 2>&1) || ! grep -q '^[0-9]*,,raw_syscalls' <<<"$out"; then
    note "--perf: perf cannot count raw_syscalls:sys_enter (perf_event_paranoid=$(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null), tracefs?): $(tr '\n' ' ' <<<"$out" | cut -c1-200); no syscall counts or profiles"
    return 1
  fi
  if ! out=$(perf record -q -e cpu-clock -F 499 -g -o "$PERF_DIR/check.data" -- true 2>&1); then
    note "--perf: perf record refused (perf_event_paranoid=$(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null)): $(tr '\n' ' ' <<<"$out" | cut -c1-200); no syscall counts or profiles"
    return 1
  fi
  rm -f "$PERF_DIR/check.data"
  # (the help read whole: grep -q would end the pipe early, and pipefail would see perf's SIGPIPE)
  if ! grep -q -- '--control' <<<"$(perf stat -h 2>&1)" || ! grep -q -- '--control' <<<"$(perf record -h 2>&1)"; then
    note "--perf: this perf ($(perf --version 2>&1)) has no --control (perf 5.10 or later needed); no syscall counts or profiles"
    return 1
  fi
  # Which calls: a few syscall tracepoints beside the total (the rest is "other" in the report).
  local calls="" c
  for c in io_uring_enter futex epoll_wait epoll_pwait epoll_ctl read write readv writev recvfrom sendto \
    recvmsg sendmsg ioctl setsockopt getsockopt close; do
    calls="$calls,syscalls:sys_enter_$c"
  done
  if grep -q '^[0-9]*,,syscalls:sys_enter_io_uring_enter' <<<"$(perf stat -x, -e "${calls#,}" -- true 2>&1)"; then
    PERF_EVENTS="$PERF_EVENTS$calls"
  else
    note "--perf: no syscalls:sys_enter_* tracepoints; syscalls are counted in total only"
  fi
  # Hardware counters: absent in most VMs (`<not supported>`); counted when present.
  out=$(perf stat -x, -e instructions,cycles -- true 2>&1)
  if grep -q '^[0-9][0-9]*,,instructions' <<<"$out"; then
    PERF_EVENTS="$PERF_EVENTS,instructions,cycles" PERF_HW="supported"
  fi
  echo "$PERF_HW" >"$PERF_DIR/hw-counters.txt"
  printf 'round\tload\tsetup\tprefix\tpids\troles\tjson\n' >"$PERF_TSV"
  # Window layout inside the measured DURATION: margin M, stat window W, M, record window W, M
  # (the counter reads and loadgen's 20 ms start delay come out of the margins).
  PERF_M=$(awk -v d="$DURATION" 'BEGIN{m = d / 10; if (m > 0.5) m = 0.5; print m}')
  PERF_W=$(awk -v d="$DURATION" -v m="$PERF_M" 'BEGIN{printf "%.3f", (d - 3 * m) / 2}')
  PERF_OK=1
  note "--perf: $(perf --version 2>&1); loads a and b, last round, in loadgen's measured window: perf stat (raw_syscalls:sys_enter, task-clock) for ${PERF_W} s, then perf record (cpu-clock, 499 Hz, -g) for ${PERF_W} s, ${PERF_M} s apart; hardware counters (instructions, cycles): $PERF_HW"
}

# The processes perf watches for a setup, and their names (profile-<setup>-<load>-<role>.txt).
perf_pids() {
  case $1 in
    direct) echo "$SVC_PID" ;;
    *) echo "${SPIDS[$1]}" ;;
  esac
}
perf_roles() {
  case $1 in
    direct) echo service ;;
    rtun*) echo responder initiator ;;
    nginx) echo master worker ;;
    nginx-2hop) echo front-master front-worker back-master back-worker ;;
    rathole*) echo server client ;;
    *) echo proc1 proc2 ;;
  esac
}

# Requests the setup has completed so far by its own counter (empty when it has none).
# perf_counter KIND PORT; exported, as perf_window runs in the bash that perf starts.
perf_counter() {
  case $1 in
    rtun) curl -s -m 2 "http://127.0.0.1:$2/metrics" | awk '/^rtun_requests_total\{listener="egress"/ {s += $NF} END {if (NR) printf "%d", s}' ;;
    nginx) curl -s -m 2 "http://127.0.0.1:$2/stub_status" | awk 'NR == 3 {print $3}' ;;
  esac
}
# The workload of each perf process, which starts with its events disabled (-D -1) and is
# switched by this through its control fifo, so that the window is exact and perf's start-up
# (0.2-0.8 s under load: /proc/kallsyms, the threads' maps) falls before it:
# sleeps until BEGIN (epoch s), reads the request counter, enables perf, sleeps until END,
# disables perf, reads the counter again. Prints "LABEL_c0 T0 T1 N", "LABEL_begin T",
# "LABEL_end T", "LABEL_c1 T0 T1 N" (T0 T1: before and after the counter read).
perf_window() { # label kind port begin end ctl-fifo ack-fifo
  local t0 c a
  perf_sleep_until() { sleep "$(awk -v d="$1" -v n="$EPOCHREALTIME" 'BEGIN{x = d - n; if (x < 0.05) x = 0.05; printf "%.3f", x}')"; }
  perf_sleep_until "$4"
  t0=$EPOCHREALTIME; c=$(perf_counter "$2" "$3"); echo "$1_c0 $t0 $EPOCHREALTIME ${c:--}"
  # The fifos are opened read-write, which never blocks: if perf is gone, the command is lost
  # and the ack read times out instead of this hanging on open. (Not `1<>` on the echo: bash's
  # export -f turns that into `<>`, i.e. stdin.)
  exec 8<>"$6" 9<>"$7"
  echo enable >&8; read -r -t 5 a <&9; echo "$1_begin $EPOCHREALTIME"
  perf_sleep_until "$5"
  echo disable >&8; read -r -t 5 a <&9; echo "$1_end $EPOCHREALTIME"
  exec 8>&- 9<&-
  t0=$EPOCHREALTIME; c=$(perf_counter "$2" "$3"); echo "$1_c1 $t0 $EPOCHREALTIME ${c:--}"
}
export -f perf_counter perf_window

# perf_start round load setup json: right after loadgen was launched, attaches perf stat and
# perf record (both disabled) in the background (PERF_JOB); the caller calls perf_finish after
# loadgen exits. Only the last round's (a) and (b) runs. Layout of loadgen's measured window
# (from launch + 20 ms + warm-up, DURATION s long; margin PERF_M): PERF_M, perf stat for
# PERF_W s, PERF_M, perf record for PERF_W s, PERF_M. The windows are stamped, not assumed.
PERF_JOB="" PERF_PREFIX=""
perf_start() {
  local round=$1 load=$2 setup=$3 json=$4
  PERF_JOB=""
  [ "$PERF_OK" = 1 ] && [ "$round" = "$ROUNDS" ] || return 0
  case $load in a|b) ;; *) return 0 ;; esac
  local pids; pids=$(perf_pids "$setup")
  [ -n "$pids" ] || return 0
  local now=$EPOCHREALTIME pfx=$PERF_DIR/$load.$setup.r$round p kind="" port=""
  case $setup in
    rtun) kind=rtun port=$P_RTUN_ADM ;;
    rtun-tls) kind=rtun port=$P_TLS_ADM ;;
    rtun-pgo) kind=rtun port=$P_PGO_ADM ;;
    nginx) kind=nginx port=$P_NGX_ST ;;
  esac
  PERF_PREFIX=$pfx
  for p in $pids; do ls "/proc/$p/task" 2>/dev/null | sed "s/^/$p /"; done >"$pfx.tasks"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$load" "$setup" "$pfx" "$pids" \
    "$(perf_roles "$setup")" "$json" >>"$PERF_TSV"
  local csv t
  csv=$(tr ' ' , <<<"$pids")
  # stat begin, stat end, record begin, record end (epoch seconds)
  read -r -a t < <(awk -v n="$now" -v wu="$WARMUP" -v m="$PERF_M" -v w="$PERF_W" \
    'BEGIN{s = n + 0.02 + wu; printf "%.3f %.3f %.3f %.3f\n", s + m, s + m + w, s + 2 * m + w, s + 2 * m + 2 * w}')
  local roles=($(perf_roles "$setup")) i=0 r label rk
  rm -f "$pfx".*.{ctl,ack}
  mkfifo "$pfx".stat.{ctl,ack}
  local limit=$(( ${WARMUP%.*} + ${DURATION%.*} + 30 ))
  : >"$pfx.windows"
  # timeout(1) bounds each and passes the cleanup's TERM on to perf.
  timeout $limit perf stat --per-thread -x, -o "$pfx.stat" -e "$PERF_EVENTS" -D -1 \
    --control "fifo:$pfx.stat.ctl,$pfx.stat.ack" -p "$csv" \
    -- bash -c 'perf_window "$@"' _ stat "$kind" "$port" "${t[0]}" "${t[1]}" "$pfx.stat.ctl" "$pfx.stat.ack" \
    >>"$pfx.windows" 2>"$pfx.stat.err" &
  PERF_JOB=$!
  # One perf record per process: `perf report --pid` on a shared recording is wrong when the
  # processes share code (rtun's two, and libc and the kernel for any): it filters merged
  # entries by the thread of their first sample. The first window also reads the counter.
  # -B: no build-id post-processing at the end; perf report resolves symbols by path, and the
  # binaries do not change during a bench.
  for p in $pids; do
    r=${roles[$i]:-proc$i} label=record rk=$kind
    [ $i = 0 ] || label=record_$r rk=""
    mkfifo "$pfx.$r".{ctl,ack}
    timeout $limit perf record -q -B -e cpu-clock -F 499 -g -D -1 -o "$pfx.$r.data" \
      --control "fifo:$pfx.$r.ctl,$pfx.$r.ack" -p "$p" \
      -- bash -c 'perf_window "$@"' _ "$label" "$rk" "$port" "${t[2]}" "${t[3]}" "$pfx.$r.ctl" "$pfx.$r.ack" \
      >>"$pfx.windows" 2>"$pfx.record-$r.err" &
    PERF_JOB="$PERF_JOB $!"
    i=$((i + 1))
  done
  PIDS+=($PERF_JOB)
}

# After loadgen exited: marks when, waits for the windows (bounded), writes the profiles.
perf_finish() {
  [ -n "$PERF_JOB" ] || return 0
  echo "loadgen_exit $EPOCHREALTIME" >>"$PERF_PREFIX.windows.end"
  # Bounded: each perf runs under timeout(1) (warm-up + duration + 30 s).
  wait $PERF_JOB 2>/dev/null
  cat "$PERF_PREFIX.windows.end" >>"$PERF_PREFIX.windows"
  rm -f "$PERF_PREFIX.windows.end" "$PERF_PREFIX".*.{ctl,ack}
  local pfx=$PERF_PREFIX load setup pids roles r
  IFS=$'\t' read -r _ load setup _ pids roles _ < <(tail -1 "$PERF_TSV")
  for r in $roles; do
    [ -s "$pfx.$r.data" ] || continue
    timeout 300 perf report -i "$pfx.$r.data" --stdio --no-children --sort dso,symbol --percent-limit 1 \
      >"$RES/profile-$setup-$load-$r.txt" 2>"$pfx.report-$r.err"
    # by shared object only (the kernel's share), for the report
    timeout 300 perf report -i "$pfx.$r.data" --stdio --no-children --sort dso -g none \
      >"$pfx.dso-$r.txt" 2>>"$pfx.report-$r.err"
  done
  PERF_JOB=""
}
