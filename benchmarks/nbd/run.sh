#!/usr/bin/env bash
# The NBD benchmark: fio's nbd engine against three NBD servers in one run: the whole Shale
# stack (shale edge serve -> volumedriver -> proxy -> 6 ASDs, etcd metadata), the edge's
# protocol core alone (NbdServer + MemoryExports), and nbdkit's memory plugin.
#   benchmarks/nbd/run.sh [--quick] [--scratch DIR]
# Builds the workspace, checks for fio, nbdkit and etcd, then runs benchmarks/dist/nbd/run.js.
# Writes benchmarks/results/nbd-<date>.json (nbd-<date>-quick.json with --quick).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH

engines=$(fio --enghelp 2>/dev/null || true)
if ! grep -qw nbd <<<"$engines"; then
  echo "nbd benchmark: fio with the nbd engine is missing; it is the client (Debian: apt-get install -y fio)" >&2
  exit 2
fi
if ! command -v nbdkit >/dev/null 2>&1; then
  echo "nbd benchmark: nbdkit is missing; it is the reference (Debian: apt-get install -y nbdkit)" >&2
  exit 2
fi
if [[ ! -x /usr/bin/etcd ]]; then
  echo "nbd benchmark: etcd is missing (Debian: apt-get install -y etcd-server)" >&2
  exit 2
fi
export COREPACK_ENABLE_DOWNLOAD_PROMPT=0 COREPACK_INTEGRITY_KEYS=0
corepack pnpm exec tsc -b
exec node benchmarks/dist/nbd/run.js "$@"
