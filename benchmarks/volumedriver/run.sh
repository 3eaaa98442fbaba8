#!/usr/bin/env bash
# The volumedriver benchmark: a real cluster on 127.0.0.1 (etcd, six ASDs, a proxy, a
# volumedriver) driven through VolumeService, beside fio on the same file system and fio's
# nbd engine against nbdkit's memory plugin, in one run.
#   benchmarks/volumedriver/run.sh [--quick] [--scratch DIR]
# Builds the workspace, checks for fio and etcd, then runs benchmarks/dist/volumedriver/run.js.
# Writes benchmarks/results/volumedriver-<date>.json (volumedriver-<date>-quick.json with --quick).
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v fio >/dev/null 2>&1; then
  echo "volumedriver benchmark: fio is missing; it is the reference (Debian: apt-get install -y fio)" >&2
  exit 2
fi
if [[ ! -x /usr/bin/etcd ]]; then
  echo "volumedriver benchmark: etcd is missing (Debian: apt-get install -y etcd-server)" >&2
  exit 2
fi
if ! command -v nbdkit >/dev/null 2>&1; then
  echo "volumedriver benchmark: nbdkit is missing; the nbd reference is skipped (Debian: apt-get install -y nbdkit)" >&2
fi
export COREPACK_ENABLE_DOWNLOAD_PROMPT=0 COREPACK_INTEGRITY_KEYS=0
corepack pnpm exec tsc -b
exec node benchmarks/dist/volumedriver/run.js "$@"
