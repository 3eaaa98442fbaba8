#!/usr/bin/env bash
# Fetches the kernel the guest tests boot (tests/src/edge-guest.test.ts): Debian's
# linux-image-amd64, or rather the linux-image-<version>-amd64 package it depends on,
# downloaded with `apt-get download`, unpacked with `dpkg -x` (never installed) into
# $SHALE_GUEST_KERNEL_DIR/root (default /var/cache/shale/guest-kernel/root), then
# `depmod -b` so `modprobe -d` can resolve module dependencies for the initramfs.
#
# Idempotent: a directory that already holds a kernel (boot/vmlinuz-V and
# lib/modules/V/modules.dep) is left alone, so repeated runs cost nothing and need no
# network. The unpack goes to a temporary directory renamed into place, so an
# interrupted run never leaves a half kernel behind; a lock serialises concurrent runs.
# A .deb already downloaded elsewhere ($SHALE_GUEST_KERNEL_REUSE, default
# /tmp/testbed/kernel, where the test bed keeps one) is used instead of downloading,
# but only if its SHA256 equals the one the apt archive lists for that package.
set -euo pipefail
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH

DIR=${SHALE_GUEST_KERNEL_DIR:-/var/cache/shale/guest-kernel}
REUSE=${SHALE_GUEST_KERNEL_REUSE:-/tmp/testbed/kernel}
log() { printf 'fetch-guest-kernel: %s\n' "$*"; }
fail() {
  printf 'fetch-guest-kernel: FAILED: %s\n' "$*" >&2
  exit 1
}

# Prints the version of a complete kernel under $1 (highest first), or nothing.
complete_kernel() {
  local root=$1 vmlinuz ver
  for vmlinuz in $(ls "$root"/boot/vmlinuz-* 2>/dev/null | sort -rV); do
    ver=${vmlinuz##*/vmlinuz-}
    if [[ -f $root/lib/modules/$ver/modules.dep ]]; then
      echo "$ver"
      return 0
    fi
  done
}

for tool in apt-get apt-cache dpkg dpkg-deb depmod modprobe flock sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || fail "missing $tool (Debian packages: apt, dpkg, kmod, util-linux, coreutils)"
done

mkdir -p "$DIR"
exec 9>"$DIR/.lock"
flock 9

ver=$(complete_kernel "$DIR/root")
if [[ -n $ver ]]; then
  log "kernel $ver already in $DIR/root"
  exit 0
fi

# The package linux-image-amd64 points at, e.g. linux-image-6.1.0-57-amd64.
pkg_of_meta() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ { print $2; exit }'; }
pkg=$(pkg_of_meta)
if [[ -z $pkg ]]; then
  log "apt does not know linux-image-amd64 yet; running apt-get update"
  apt-get update -qq || fail "apt-get update failed"
  pkg=$(pkg_of_meta)
fi
[[ -n $pkg ]] || fail "apt-cache depends linux-image-amd64 names no linux-image-* package (is the Debian archive in /etc/apt/sources.list?)"
want_ver=$(apt-cache show "$pkg" | awk '/^Version:/ { print $2; exit }')
want_sha=$(apt-cache show "$pkg=$want_ver" | awk '/^SHA256:/ { print $2; exit }')
[[ -n $want_ver && -n $want_sha ]] || fail "apt-cache show $pkg gives no Version/SHA256"

rm -rf "$DIR"/root.tmp.* "$DIR"/download.tmp.*
dl=$(mktemp -d "$DIR/download.tmp.XXXXXX")
deb=
for candidate in "$REUSE"/"${pkg}"_*.deb; do
  [[ -f $candidate ]] || continue
  if [[ $(sha256sum "$candidate" | cut -d' ' -f1) == "$want_sha" ]]; then
    log "reusing $candidate (SHA256 matches the archive's $pkg $want_ver)"
    deb=$candidate
    break
  fi
done
if [[ -z $deb ]]; then
  log "downloading $pkg $want_ver"
  # apt-get download writes into the current directory. As root it warns that the _apt
  # user cannot write there ("unsandboxed"); harmless.
  (cd "$dl" && apt-get download -q "$pkg=$want_ver") || fail "apt-get download $pkg=$want_ver failed (network or archive unreachable?)"
  deb=$(ls "$dl"/"${pkg}"_*.deb)
fi

tmp=$(mktemp -d "$DIR/root.tmp.XXXXXX")
log "unpacking $(basename "$deb") into $DIR/root"
dpkg -x "$deb" "$tmp" || fail "dpkg -x $deb failed"
ver=$(ls "$tmp"/boot/vmlinuz-* 2>/dev/null | sort -V | tail -1)
ver=${ver##*/vmlinuz-}
[[ -n $ver && -d $tmp/lib/modules/$ver ]] || fail "$deb holds no boot/vmlinuz-V with lib/modules/V"
depmod -b "$tmp" "$ver" || fail "depmod -b $tmp $ver failed"
rm -rf "$DIR/root"
mv "$tmp" "$DIR/root"
rm -rf "$dl"
log "kernel $ver ready in $DIR/root ($(du -sh "$DIR/root" | cut -f1))"
