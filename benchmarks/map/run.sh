#!/usr/bin/env bash
# The mapped-vDisk benchmark (issue 17): fio (libaio, O_DIRECT) on ext4 on a vDisk mapped by
# `shale vdisk map` (nbdfuse + loop) against ext4 on a loop device over a plain file, one run.
#   benchmarks/map/run.sh [--quick] [--scratch DIR]      (as root)
# Builds the workspace, checks for fio, nbdfuse, losetup and mkfs.ext4, then runs
# benchmarks/dist/map/fs-fio.js. Writes benchmarks/results/map-fs-<date>[-quick].json.
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH
for tool in fio nbdfuse losetup mkfs.ext4; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "map benchmark: $tool is missing (Debian: apt-get install -y fio libnbd-bin fuse3 util-linux e2fsprogs)" >&2
    exit 2
  fi
done
export COREPACK_ENABLE_DOWNLOAD_PROMPT=0 COREPACK_INTEGRITY_KEYS=0
corepack pnpm exec tsc -b
exec node benchmarks/dist/map/fs-fio.js "$@"
