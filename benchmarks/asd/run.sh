#!/usr/bin/env bash
# The ASD benchmark: Shale's ASD beside fio on the same file system, in one run.
#   benchmarks/asd/run.sh [--quick] [--scratch DIR] [--out FILE] [--keep] [--profile-asd DIR]
# Builds the workspace, checks for fio, then runs benchmarks/dist/asd/run.js.
# Writes benchmarks/results/asd-<date>.json (asd-<date>-quick.json with --quick).
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v fio >/dev/null 2>&1; then
  echo "asd benchmark: fio is missing; it is the reference system (Debian: apt-get install -y fio)" >&2
  exit 2
fi
export COREPACK_ENABLE_DOWNLOAD_PROMPT=0 COREPACK_INTEGRITY_KEYS=0
corepack pnpm exec tsc -b
exec node benchmarks/dist/asd/run.js "$@"
