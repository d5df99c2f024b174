#!/usr/bin/env bash
# Builds every fuzz target with libFuzzer on the stable toolchain and runs each for a bounded
# time over its seed corpus. Exits non-zero if any target crashed (a panic or a failed
# assertion), hung (one input over 10 s) or ran out of memory; the input that did it is saved
# under fuzz/artifacts/TARGET/.
#
# usage: fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 20 s, every target)
#
# No `cargo fuzz` and no nightly needed: this passes the same coverage flags that
# `cargo fuzz build --sanitizer none` passes (all stable `-C` flags). The sanitizers need
# nightly's `-Zsanitizer`; the code fuzzed here is safe Rust, so none is used.
#
# Environment: FUZZ_BUILD_ONLY=1 builds and stops; FUZZ_CGU=N sets the codegen units (default:
# cargo's; 1 runs about 2x faster but builds slower); FUZZ_ARGS adds libFuzzer options to
# every run (for example `-jobs=2` or `-max_len=20000`).
set -euo pipefail
cd "$(dirname "$0")"
fuzz_dir=$PWD

secs=${1:-20}
if ! [[ $secs =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: fuzz/run.sh [SECONDS_PER_TARGET (>= 1)] [TARGET...]" >&2
  exit 2
fi
shift $(($# > 0 ? 1 : 0))
if (($# > 0)); then
  targets=("$@")
else
  mapfile -t targets < <(sed -n 's/^name = "\([a-z0-9_]*\)"$/\1/p' Cargo.toml | grep -v '^rtun-fuzz$')
fi

triple=$(rustc -vV | sed -n 's/^host: //p')
rustflags=(
  -Cpasses=sancov-module
  -Cllvm-args=-sanitizer-coverage-level=4
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
  -Cllvm-args=-sanitizer-coverage-pc-table
  -Cllvm-args=-sanitizer-coverage-trace-compares
  -Cllvm-args=-sanitizer-coverage-stack-depth
  -Cllvm-args=-simplifycfg-branch-fold-threshold=0
  --cfg fuzzing
)
if [[ -n ${FUZZ_CGU:-} ]]; then
  rustflags+=("-Ccodegen-units=$FUZZ_CGU")
fi

echo "fuzz: building ${#targets[@]} targets ($triple, profile ${FUZZ_PROFILE:-release}, stable libFuzzer, no sanitizer)"
build_start=$SECONDS
bins=()
for t in "${targets[@]}"; do bins+=(--bin "$t"); done
# --target keeps these flags off build scripts and out of the host's target/release. No
# --locked: the fuzz crate's lock file follows rtun's dependencies, which change in the
# workspace without touching fuzz/ (cargo adds what is new and keeps every pinned version).
profile=${FUZZ_PROFILE:-release}
RUSTFLAGS="${rustflags[*]}" cargo build --profile "$profile" --target "$triple" "${bins[@]}"
echo "fuzz: built in $((SECONDS - build_start)) s"
[[ ${FUZZ_BUILD_ONLY:-} == 1 ]] && exit 0

bin_dir=${CARGO_TARGET_DIR:-$fuzz_dir/target}/$triple/$profile
logs=$fuzz_dir/target/fuzz-logs
# Targets run in an empty directory: the config target may read files its input names.
scratch=$fuzz_dir/target/fuzz-cwd
mkdir -p "$logs" "$scratch"

failed=()
total=0
printf '%-20s %12s %10s %8s  %s\n' target executions exec/s coverage result
for t in "${targets[@]}"; do
  work=$fuzz_dir/target/corpus-work/$t
  artifacts=$fuzz_dir/artifacts/$t
  mkdir -p "$work" "$artifacts"
  args=(-max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
    -artifact_prefix="$artifacts/")
  [[ -f $fuzz_dir/dict/$t.dict ]] && args+=(-dict="$fuzz_dir/dict/$t.dict")
  # shellcheck disable=SC2206
  args+=(${FUZZ_ARGS:-})
  # New inputs go to the first directory (scratch); the committed seeds are only read.
  status=0
  (cd "$scratch" && "$bin_dir/$t" "${args[@]}" "$work" "$fuzz_dir/corpus/$t") \
    >"$logs/$t.log" 2>&1 || status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$logs/$t.log" | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$logs/$t.log" | tail -1 | cut -d' ' -f2 || true)
  total=$((total + ${execs:-0}))
  if ((status == 0)); then
    result=ok
  else
    result="FAILED (exit $status)"
    failed+=("$t")
  fi
  printf '%-20s %12s %10s %8s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" "$result"
  if ((status != 0)); then
    echo "---- $t: end of $logs/$t.log"
    tail -n 40 "$logs/$t.log"
    echo "---- reproduce: fuzz/target/$triple/$profile/$t fuzz/artifacts/$t/<crash file>"
  fi
done

echo "fuzz: ${#targets[@]} targets, $total executions in total, ${#failed[@]} failing${failed[*]:+: ${failed[*]}}"
((${#failed[@]} == 0))
