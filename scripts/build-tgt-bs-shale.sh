#!/usr/bin/env bash
# build-tgt-bs-shale.sh -- build tgt's "shale" backing store (native/tgt-bs-shale/
# bs_shale.c: a LUN served straight from an NBD export) and install it where
# tgtd dlopen()s backing-store modules. Idempotent; run as root on Debian 12.
#
#   scripts/build-tgt-bs-shale.sh           # build, install, prove tgtd loads it
#   scripts/build-tgt-bs-shale.sh --check   # exit 0 iff installed and built from
#                                           # the current bs_shale.c
#
# Steps: add deb-src entries for bookworm (+updates, +security: tgt is
# 1:1.0.85-1+deb12u1) if none exist; apt-get install libnbd-dev dpkg-dev
# build-essential tgt; `apt-get source tgt=<installed version>` into
# $TGT_SRC_DIR (default /var/cache/shale/tgt-src; tgt packages no headers);
# compile against its usr/ headers; install bs_shale.so into tgtd's BSDIR
# (read from the tgtd binary; /usr/lib/tgt/backing-store on Debian); start a
# throwaway tgtd (-C 41, 127.0.0.1:3291) and check it lists "shale".
set -euo pipefail
export PATH=/usr/bin:/usr/sbin:/bin:/sbin:$PATH

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC=$REPO/native/tgt-bs-shale/bs_shale.c
TGT_SRC_DIR=${TGT_SRC_DIR:-/var/cache/shale/tgt-src}
CTL_PORT=41                       # tgtd -C / tgtadm -C: our own control socket
PORTAL=127.0.0.1:3291
DEB_SRC_FILE=/etc/apt/sources.list.d/shale-tgt-src.sources

log()  { printf '[build-tgt-bs-shale] %s\n' "$*"; }
fail() { printf '[build-tgt-bs-shale] FAIL: %s\n' "$*" >&2; exit 1; }

src_sha256() { sha256sum "$SRC" | awk '{print $1}'; }
tgtd_bsdir() {
  local d
  d=$(strings /usr/sbin/tgtd 2>/dev/null | grep -m1 '^/.*/backing-store$' || true)
  echo "${d:-/usr/lib/tgt/backing-store}"
}
installed_hash() {  # the hash baked into the installed module, or nothing
  local so; so=$(tgtd_bsdir)/bs_shale.so
  [[ -f $so ]] && strings "$so" | sed -n 's/^bs_shale-src-sha256=//p' | head -1
}

if [[ ${1:-} == --check ]]; then
  [[ -x /usr/sbin/tgtd ]] || { echo "tgt not installed"; exit 1; }
  want=$(src_sha256); have=$(installed_hash || true)
  if [[ -n $have && $have == "$want" ]]; then echo "bs_shale.so up to date ($(tgtd_bsdir)/bs_shale.so, src $want)"; exit 0; fi
  echo "bs_shale.so missing or stale (installed '${have:-none}', source $want)"; exit 1
fi
[[ $# -eq 0 ]] || fail "usage: $0 [--check]"
[[ $(id -u) -eq 0 ]] || fail "run as root (apt-get, install into $(tgtd_bsdir))"
[[ -f $SRC ]] || fail "missing $SRC"

# ---- packages ----
need_pkgs=()
for p in libnbd-dev dpkg-dev build-essential tgt; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need_pkgs+=("$p")
done
if ! grep -rqsE '^(deb-src|Types:.*deb-src)' /etc/apt/sources.list /etc/apt/sources.list.d/; then
  log "adding deb-src entries for bookworm, bookworm-updates, bookworm-security: $DEB_SRC_FILE"
  cat >"$DEB_SRC_FILE" <<'EOF'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  apt-get update -q || fail "apt-get update failed"
fi
if (( ${#need_pkgs[@]} )); then
  log "installing ${need_pkgs[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_pkgs[@]}" || fail "apt-get install ${need_pkgs[*]} failed"
fi

# ---- tgt source, matching the installed tgtd exactly ----
TGT_VERSION=$(dpkg-query -W -f='${Version}' tgt)            # e.g. 1:1.0.85-1+deb12u1
UPSTREAM=${TGT_VERSION#*:}; UPSTREAM=${UPSTREAM%-*}         # e.g. 1.0.85
TREE=$TGT_SRC_DIR/tgt-$UPSTREAM
STAMP=$TGT_SRC_DIR/.source-version
mkdir -p "$TGT_SRC_DIR"
if [[ ! -f $TREE/usr/bs_rbd.c || $(cat "$STAMP" 2>/dev/null) != "$TGT_VERSION" ]]; then
  log "fetching tgt source $TGT_VERSION into $TGT_SRC_DIR"
  rm -rf "$TREE"
  (cd "$TGT_SRC_DIR" && apt-get source -q "tgt=$TGT_VERSION") || fail "apt-get source tgt=$TGT_VERSION failed (deb-src entries? see $DEB_SRC_FILE)"
  [[ -f $TREE/usr/bs_rbd.c ]] || fail "tgt source tree not found at $TREE"
  echo "$TGT_VERSION" >"$STAMP"
else
  log "tgt source $TGT_VERSION already at $TREE"
fi

# ---- compile (flags as tgt's usr/Makefile builds bs_rbd.so, minus -Werror) ----
HASH=$(src_sha256)
OUT=$TGT_SRC_DIR/build/bs_shale.so
mkdir -p "$(dirname "$OUT")"
log "compiling $SRC against $TREE/usr"
gcc -D_GNU_SOURCE -DUSE_SIGNALFD -DUSE_TIMERFD -I"$TREE/usr" \
    -g -O2 -fno-strict-aliasing -Wall -Wstrict-prototypes \
    -DSHALE_SRC_SHA256="\"$HASH\"" \
    -shared -fPIC "$SRC" -o "$OUT" -lnbd -lpthread || fail "compile failed"
nm -D --defined-only "$OUT" | grep -q ' T register_bs_module$' || fail "$OUT has no register_bs_module"

# ---- install ----
BSDIR=$(tgtd_bsdir)
install -d -m 755 "$BSDIR"
install -m 755 "$OUT" "$BSDIR/bs_shale.so"
log "installed $BSDIR/bs_shale.so (src sha256 $HASH)"

# ---- prove: a throwaway tgtd lists "shale" among its backing stores ----
ss -ltn | grep -q " ${PORTAL} " && fail "something already listens on $PORTAL"
WORK=$(mktemp -d /tmp/build-tgt-bs-shale.XXXXXX)
TGTD_PID=
stop_tgtd() {
  if [[ -n $TGTD_PID ]] && kill -0 "$TGTD_PID" 2>/dev/null; then
    tgtadm -C $CTL_PORT --op delete --mode system >/dev/null 2>&1 || true
    for _ in $(seq 30); do kill -0 "$TGTD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$TGTD_PID" 2>/dev/null || true
    wait "$TGTD_PID" 2>/dev/null || true
  fi
  TGTD_PID=
}
trap 'stop_tgtd; rm -rf "$WORK"' EXIT
tgtd -f -C $CTL_PORT --iscsi portal=$PORTAL >"$WORK/tgtd.log" 2>&1 &
TGTD_PID=$!
for _ in $(seq 50); do tgtadm -C $CTL_PORT --op show --mode system >"$WORK/system" 2>/dev/null && break; sleep 0.1; done
stores=$(sed -n '/Backing stores:/,/Device types:/p' "$WORK/system" | sed '1d;$d' | awk '{print $1}' | tr '\n' ' ')
if ! grep -qw shale <<<"$stores"; then
  grep -i 'shale\|dlopen' "$WORK/tgtd.log" >&2 || true
  fail "tgtd did not load $BSDIR/bs_shale.so (backing stores: ${stores:-none})"
fi
log "tgtd loads it: backing stores: $stores"
stop_tgtd
log "OK: $BSDIR/bs_shale.so"
