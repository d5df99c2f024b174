#!/usr/bin/env bash
# Checks contrib/rtun.service with `systemd-analyze verify` and fails on any warning (verify
# itself exits 0 on an unknown key or a bad value). verify wants ExecStart's binary to exist,
# so it checks a copy of the unit that names RTUN (default: the unit's /usr/local/bin/rtun).
#
#   contrib/verify-unit.sh [RTUN]          # e.g. contrib/verify-unit.sh target/debug/rtun
set -euo pipefail
unit="$(dirname "$0")/rtun.service"
rtun=$(realpath "${1:-/usr/local/bin/rtun}")
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s|/usr/local/bin/rtun|$rtun|g" "$unit" >"$tmp/rtun.service"
if ! out=$(systemd-analyze verify --man=no "$tmp/rtun.service" 2>&1) || [ -n "$out" ]; then
  printf '%s\n' "$out" | sed "s|$tmp/|contrib/|g" >&2
  echo "contrib/rtun.service: systemd-analyze verify failed" >&2
  exit 1
fi
echo "contrib/rtun.service: OK"
