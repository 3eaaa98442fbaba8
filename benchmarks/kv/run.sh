#!/usr/bin/env bash
# The metadata-store benchmark: manifest commits (1 KiB, conditional on the namespace
# epoch) on EtcdKv against a real single-member etcd and on LevelKv, in one run.
#   benchmarks/kv/run.sh [--quick]
# Builds the workspace, checks for etcd, then runs benchmarks/dist/kv/run.js.
# Writes benchmarks/results/kv-<date>.json (kv-<date>-quick.json with --quick).
set -euo pipefail
cd "$(dirname "$0")/../.."

if [[ ! -x /usr/bin/etcd ]]; then
  echo "kv benchmark: etcd is missing (Debian: apt-get install -y etcd-server)" >&2
  exit 2
fi
export COREPACK_ENABLE_DOWNLOAD_PROMPT=0 COREPACK_INTEGRITY_KEYS=0
corepack pnpm exec tsc -b
exec node benchmarks/dist/kv/run.js "$@"
