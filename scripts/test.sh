#!/usr/bin/env bash
# Installs what the tests need (Debian packages, pnpm, npm deps, the build), then runs
# the linter and every test. The one command CI runs (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests drive, by the command that proves each is there.
declare -A NEEDED=(
  [mkfs.ext4]=e2fsprogs
  [mount]=mount
  [losetup]=mount
  [etcd]=etcd-server
  [nbdinfo]=libnbd-bin
  [nbdfuse]=libnbd-bin
  [fusermount3]=fuse3
  [debugfs]=e2fsprogs
  [fstrim]=util-linux
  [blockdev]=util-linux
  [nbdsh]=python3-libnbd
  [qemu-io]=qemu-utils
  [qemu-system-x86_64]=qemu-system-x86
  [fio]=fio
  [busybox]=busybox-static
  [cpio]=cpio
  [modprobe]=kmod
  [dockerd]=docker.io
  [mkfs.xfs]=xfsprogs
  [blkid]=util-linux
  [iptables]=iptables
  [tgtd]=tgt
  [iscsi-inq]=libiscsi-bin
  [iscsi-test-cu]=libiscsi-bin
  [nbdkit]=nbdkit
)
missing=()
for tool in "${!NEEDED[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || PATH="/usr/sbin:/sbin:$PATH" command -v "$tool" >/dev/null 2>&1 || missing+=("${NEEDED[$tool]}")
done
# The Docker plugin test copies the static busybox into its image (a dynamic one finds no libc).
[ -x /bin/busybox ] || missing+=(busybox-static)
# qemu's iscsi:// driver is a module in its own package (the iSCSI tests drive qemu-io through it).
ls /usr/lib/*/qemu/block-iscsi.so >/dev/null 2>&1 || missing+=(qemu-block-extra)
if [ ${#missing[@]} -gt 0 ]; then
  echo "test: installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"
fi
# The kernel the guest test boots (Debian's linux-image-amd64, unpacked, not installed).
# Without it the other tests still run; edge-guest then fails, naming what is missing.
bash scripts/fetch-guest-kernel.sh || echo "test: could not fetch the guest kernel; the edge-guest test will fail"

bash scripts/setup.sh
# tgt's "shale" backing store (native/tgt-bs-shale), built against tgt's Debian source.
bash scripts/build-tgt-bs-shale.sh
export COREPACK_ENABLE_DOWNLOAD_PROMPT=0 COREPACK_INTEGRITY_KEYS=0
if command -v corepack >/dev/null 2>&1; then corepack pnpm run lint; else npx -y pnpm run lint; fi
node scripts/run-tests.mjs "$@"
