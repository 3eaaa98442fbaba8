#!/usr/bin/env bash
# smoke.sh -- proves tgtd serves a LUN from an NBD export through bs_shale.so:
# SCSI basics, data written over iSCSI lands in the NBD export, the full
# libiscsi conformance suite fails nothing that tgt's file backing (rdwr, same
# run) does not, and an NBD server restart under a writing client is a pause,
# not an error.
#
#   nbdkit memory 256M :10839 <-NBD- bs_shale (tgtd -C 41, 127.0.0.1:3291) <-iSCSI- libiscsi / qemu-io
#
# Needs: scripts/build-tgt-bs-shale.sh run first (installs bs_shale.so), and
# packages tgt nbdkit libnbd-bin libiscsi-bin qemu-utils qemu-block-extra.
# Run as root. Ports: NBD 10839, iSCSI 3291, tgtd control -C 41 only.
#   SKIP_CU=1 native/tgt-bs-shale/smoke.sh   # skip the two conformance runs
#   THIN=1 native/tgt-bs-shale/smoke.sh      # CU on a thin-provisioned shale LUN only (see below)
set -euo pipefail
export PATH=/usr/bin:/usr/sbin:/bin:/sbin:$PATH

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
NBD_PORT=10839
PORTAL=127.0.0.1:3291
CTL=41
IQN=iqn.2026-12.io.shale:smoke
IQN_FILE=iqn.2026-12.io.shale:smoke-file
IQN_RESTART=iqn.2026-12.io.shale:smoke-restart
LUN_BYTES=$((256 << 20))
NBD_URL=nbd://127.0.0.1:$NBD_PORT
TGT="tgtadm -C $CTL --lld iscsi"
# tgt 1.0.85's own failures in iscsi-test-cu 1.19 on a file-backed LUN
KNOWN_TGT_FAILS="GetLBAStatus.BeyondEol PrinServiceactionRange.Range ProutReserve.OwnershipEA
ProutReserve.OwnershipEARO ProutReserve.OwnershipWE ProutReserve.OwnershipWERO
Reserve6.2Initiators iSCSIdatasn.iSCSIDataSnInvalid"

log()  { printf '[bs-shale-smoke] %s\n' "$*"; }
fail() { printf '[bs-shale-smoke] FAIL: %s\n' "$*" >&2; exit 1; }
ms()   { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

# ---- preconditions: tools (named by package), module, free ports ----
for t in tgtd:tgt tgtadm:tgt nbdkit:nbdkit nbdinfo:libnbd-bin iscsi-inq:libiscsi-bin \
         iscsi-readcapacity16:libiscsi-bin iscsi-test-cu:libiscsi-bin qemu-io:qemu-utils python3:python3; do
  command -v "${t%%:*}" >/dev/null || fail "missing ${t%%:*}: apt-get install -y ${t#*:}"
done
[[ -e /usr/lib/x86_64-linux-gnu/qemu/block-iscsi.so ]] || fail "qemu-io has no iscsi:// driver: apt-get install -y qemu-block-extra"
"$REPO/scripts/build-tgt-bs-shale.sh" --check >/dev/null || fail "bs_shale.so missing or stale: run scripts/build-tgt-bs-shale.sh"
ss -ltn | grep -q " ${PORTAL} " && fail "something already listens on $PORTAL"
ss -ltn | grep -q ":$NBD_PORT " && fail "something already listens on :$NBD_PORT"

mkdir -p /tmp/testbed; WORK=$(mktemp -d /tmp/testbed/bs-shale-smoke.XXXXXX)
TGTD_PID= NBD_PID= WRITER_PID=
T0=$(date +%s%N)

stop_nbd() {
  if [[ -n $NBD_PID ]] && kill -0 "$NBD_PID" 2>/dev/null; then
    kill "${1:--TERM}" "$NBD_PID" 2>/dev/null || true; wait "$NBD_PID" 2>/dev/null || true
  fi
  NBD_PID=
}
cleanup() {
  local rc=$?
  [[ -n $WRITER_PID ]] && { kill "$WRITER_PID" 2>/dev/null || true; wait "$WRITER_PID" 2>/dev/null || true; }
  if [[ -n $TGTD_PID ]] && kill -0 "$TGTD_PID" 2>/dev/null; then
    # tgtd ignores SIGTERM: delete targets, then the system, then SIGKILL as last resort
    for tid in 1 2 3; do $TGT --op delete --mode target --tid $tid --force >/dev/null 2>&1 || true; done
    $TGT --op delete --mode system >/dev/null 2>&1 || true
    for _ in $(seq 30); do kill -0 "$TGTD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$TGTD_PID" 2>/dev/null || true; wait "$TGTD_PID" 2>/dev/null || true
  fi
  stop_nbd
  if [[ $rc -ne 0 && -f $WORK/tgtd.log ]]; then echo "--- tgtd log (tail) ---"; tail -20 "$WORK/tgtd.log"; fi
  if [[ ${KEEP_WORK:-} == 1 ]]; then echo "work dir kept: $WORK"; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT INT TERM

expect_ok() { "$@" >"$WORK/out" 2>&1 || { cat "$WORK/out"; fail "expected success: $*"; }; }

start_nbd() {  # nbdkit plugin args...
  nbdkit -f -i 127.0.0.1 -p $NBD_PORT "$@" >>"$WORK/nbdkit.log" 2>&1 &
  NBD_PID=$!
  for _ in $(seq 100); do nbdinfo --can connect "$NBD_URL" 2>/dev/null && return 0; sleep 0.05; done
  fail "nbdkit $* did not come up: $(tail -3 "$WORK/nbdkit.log")"
}

new_target() {  # tid iqn bstype backing
  $TGT --op new --mode target --tid "$1" -T "$2"
  $TGT --op new --mode logicalunit --tid "$1" --lun 1 --bstype "$3" -b "$4" \
    || fail "tgtadm could not create LUN ($3 $4): $(grep bs_shale "$WORK/tgtd.log" | tail -2)"
  $TGT --op bind --mode target --tid "$1" -I ALL
  # THIN=1: both CU LUNs thin-provisioned, so UNMAP / WRITE SAME(UNMAP) tests run
  [[ ${THIN:-} != 1 ]] || $TGT --op update --mode logicalunit --tid "$1" --lun 1 --params thin_provisioning=1
}

run_cu() {  # label url -> prints summary, writes $WORK/fails-label and $WORK/cu-ms-label
  local label=$1 url=$2 tc
  mkdir -p "$WORK/cu-$label"; tc=$(date +%s%N)
  # a hung target must fail the run, not stall it (a full run takes a few minutes)
  (cd "$WORK/cu-$label" && timeout ${CU_TIMEOUT_S:-1200} iscsi-test-cu -d -s -x "$url" >suite.out 2>&1) || true
  ms "$tc" >"$WORK/cu-ms-$label"
  [[ -s $WORK/cu-$label/CUnitAutomated-Results.xml ]] || fail "iscsi-test-cu ($label) wrote no results: $(tail -3 "$WORK/cu-$label/suite.out")"
  python3 - "$WORK/cu-$label/CUnitAutomated-Results.xml" "$WORK/fails-$label" "$label" "$(cat "$WORK/cu-ms-$label")" <<'EOF'
import re, sys
x = open(sys.argv[1]).read()
fails = set()
for m in re.finditer(r'<SUITE_NAME>\s*(.*?)\s*</SUITE_NAME>(.*?)</CUNIT_RUN_SUITE_(?:SUCCESS|FAILURE)>', x, re.S):
    for t in re.finditer(r'<CUNIT_RUN_TEST_FAILURE>\s*<TEST_NAME>\s*(.*?)\s*</TEST_NAME>', m.group(2)):
        fails.add(m.group(1) + "." + t.group(1))
tot = re.search(r'<TYPE> Test Cases </TYPE>\s*<TOTAL>\s*(\d+).*?<SUCCEEDED>\s*(\d+).*?<FAILED>\s*(\d+)', x, re.S)
open(sys.argv[2], "w").write("".join(f + "\n" for f in sorted(fails)))
print("[bs-shale-smoke]    iscsi-test-cu (%s): %s test cases, %s passed, %s failed, %d distinct failed tests, %s ms"
      % (sys.argv[3], tot.group(1), tot.group(2), tot.group(3), len(fails), sys.argv[4]))
for f in sorted(fails): print("[bs-shale-smoke]      failed: " + f)
EOF
}

# ---- tgtd on its own control port and portal ----
tgtd -f -C $CTL --iscsi portal=$PORTAL >"$WORK/tgtd.log" 2>&1 &
TGTD_PID=$!
for _ in $(seq 50); do $TGT --op show --mode system >"$WORK/system" 2>/dev/null && break; sleep 0.1; done
grep -qw shale "$WORK/system" || fail "tgtd did not load bs_shale.so"
log "tgtd up on $PORTAL (-C $CTL), shale backing store loaded"

# ---- 1. basics on nbdkit memory 256M ----
start_nbd memory 256M
new_target 1 $IQN shale "$NBD_URL"
URL=iscsi://$PORTAL/$IQN/1
expect_ok iscsi-inq "$URL"
log "iscsi-inq: $(grep -E '^(Vendor|Product)' "$WORK/out" | tr -s ' ' | tr '\n' ' ')"
expect_ok iscsi-readcapacity16 "$URL"
cap=$(awk -F: '/Total size/{gsub(/ /,"",$2); print $2}' "$WORK/out")
[[ $cap == "$LUN_BYTES" ]] || fail "readcapacity16: $cap bytes, want $LUN_BYTES"
log "iscsi-readcapacity16: $cap bytes (256 MiB)"

# ---- 2. data: written over iSCSI, read back from the NBD export directly ----
expect_ok qemu-io -f raw -c 'write -P 0xa5 0 1M' -c 'write -P 0x3c 4M 64k' \
  -c 'write -P 0x5a 255M 1M' -c 'write -z 8M 2M' -c 'flush' "$URL"
expect_ok qemu-io -r -f raw -c 'read -P 0xa5 0 1M' -c 'read -P 0x3c 4M 64k' \
  -c 'read -P 0x5a 255M 1M' -c 'read -P 0 8M 2M' "$NBD_URL"
grep -q 'verification failed\|Pattern verification' "$WORK/out" && { cat "$WORK/out"; fail "data written over iSCSI differs in the NBD export"; }
# and the other way: written over NBD, read over iSCSI
expect_ok qemu-io -f raw -c 'write -P 0x77 16M 128k' "$NBD_URL"
expect_ok qemu-io -r -f raw -c 'read -P 0x77 16M 128k' "$URL"
grep -q 'verification failed\|Pattern verification' "$WORK/out" && { cat "$WORK/out"; fail "data written over NBD differs over iSCSI"; }
log "data: patterns written over iSCSI read back over NBD (and NBD -> iSCSI)"

# ---- 3. conformance: shale LUN, then a file-backed (rdwr) LUN, same run ----
if [[ ${SKIP_CU:-} != 1 ]]; then
  run_cu shale "$URL"
  if [[ ${THIN:-} == 1 ]]; then
    # On a thin file LUN, iscsi-test-cu 1.19 spins (client at 100% CPU, after
    # the CompareAndWrite suite) and never finishes, so THIN=1 compares with
    # the known list. Unmap.ZeroBlocks fails the same way on a thin rdwr LUN
    # run alone (-t ALL.Unmap.ZeroBlocks): the test sends an LBA beyond the end.
    KNOWN_TGT_FAILS="$KNOWN_TGT_FAILS Unmap.ZeroBlocks"
    printf '%s\n' $KNOWN_TGT_FAILS | sort >"$WORK/fails-file"
    echo 0 >"$WORK/cu-ms-file"
  else
    truncate -s $LUN_BYTES "$WORK/lun.img"
    new_target 2 $IQN_FILE rdwr "$WORK/lun.img"
    run_cu file "iscsi://$PORTAL/$IQN_FILE/1"
    $TGT --op delete --mode target --tid 2 --force
  fi
  printf '%s\n' $KNOWN_TGT_FAILS | sort >"$WORK/known"
  extra_known=$(comm -13 "$WORK/known" <(sort "$WORK/fails-shale"))
  extra_file=$(comm -13 <(sort "$WORK/fails-file") <(sort "$WORK/fails-shale"))
  fixed=$(comm -23 <(sort "$WORK/fails-file") <(sort "$WORK/fails-shale"))
  [[ ${THIN:-} == 1 ]] || log "CU duration: shale $(cat "$WORK/cu-ms-shale") ms, file $(cat "$WORK/cu-ms-file") ms" \
      "(ratio $(python3 -c "print(round($(cat "$WORK/cu-ms-shale")/$(cat "$WORK/cu-ms-file"),2))"))"
  [[ -n $fixed ]] && log "passes on shale but fails on file: $(tr '\n' ' ' <<<"$fixed")"
  [[ -z $extra_known ]] || log "shale failures beyond the 8 known tgt ones: $(tr '\n' ' ' <<<"$extra_known")"
  base="the file LUN passes"; [[ ${THIN:-} != 1 ]] || base="is outside the known list (THIN=1)"
  [[ -z $extra_file ]] || fail "shale LUN fails tests that $base: $(tr '\n' ' ' <<<"$extra_file")"
  log "conformance: shale LUN fails nothing that $base"
fi
# ---- 4. thin provisioning: UNMAP and WRITE SAME(UNMAP) deallocate, read back zero ----
$TGT --op update --mode logicalunit --tid 1 --lun 1 --params thin_provisioning=1
expect_ok qemu-io -f raw -c 'write -P 0x66 32M 4M' -c 'discard 32M 1M' -c 'write -z -u 34M 1M' -c flush "$URL"
expect_ok qemu-io -r -f raw -c 'read -P 0 32M 1M' -c 'read -P 0x66 33M 1M' -c 'read -P 0 34M 1M' -c 'read -P 0x66 35M 1M' "$NBD_URL"
grep -q 'verification failed\|Pattern verification' "$WORK/out" && { cat "$WORK/out"; fail "UNMAP / WRITE SAME(UNMAP) did not read back as zero (or hit neighbours)"; }
nbdinfo --map "$NBD_URL" >"$WORK/map" || fail "nbdinfo --map failed"
python3 - "$WORK/map" <<'EOF2' || fail "UNMAP / WRITE SAME(UNMAP) did not deallocate in nbdkit memory: $(cat "$WORK/map")"
import sys
# nbdinfo --map: "offset length type description"; type bit 0 = hole
holes = [(int(o), int(o) + int(l)) for o, l, t, *_ in (r.split() for r in open(sys.argv[1])) if int(t) & 1]
want = [(32 << 20, 33 << 20), (34 << 20, 35 << 20)]
sys.exit(0 if all(any(a <= lo and hi <= b for a, b in holes) for lo, hi in want) else 1)
EOF2
log "thin: UNMAP (qemu discard) and WRITE SAME 16 with UNMAP (write -z -u) read back zero and are holes in the export"
$TGT --op delete --mode target --tid 1 --force
stop_nbd

# ---- 5. server errors reach the initiator as the mapped sense, not a hang ----
start_nbd --filter=error memory 16M \
  error-pwrite=ENOSPC error-pwrite-rate=100% error-pwrite-file="$WORK/enospc" \
  error-pread=EIO error-pread-rate=100% error-pread-file="$WORK/eio"
new_target 1 $IQN shale "$NBD_URL"
touch "$WORK/enospc"
qemu-io -f raw -c 'write -P 1 0 64k' "$URL" >"$WORK/out" 2>&1 || true
grep -q 'No space left on device' "$WORK/out" || { cat "$WORK/out"; fail "ENOSPC from the server did not reach the initiator as SPACE ALLOCATION FAILED"; }
log "errors: server ENOSPC on write -> initiator sees ENOSPC (DATA PROTECT 27/07): $(grep -m1 'No space' "$WORK/out")"
rm "$WORK/enospc"; touch "$WORK/eio"
qemu-io -r -f raw -c 'read 0 64k' "$URL" >"$WORK/out" 2>&1 || true
grep -q 'Input/output error' "$WORK/out" || { cat "$WORK/out"; fail "EIO from the server did not reach the initiator as MEDIUM ERROR"; }
log "errors: server EIO on read -> initiator sees EIO (MEDIUM ERROR 11/00): $(grep -m1 'Input/output' "$WORK/out")"
rm "$WORK/eio"
expect_ok qemu-io -f raw -c 'write -P 2 0 64k' -c 'read -P 2 0 64k' "$URL"
grep -q 'verification failed\|Pattern verification' "$WORK/out" && fail "I/O after injected errors is wrong"
log "errors: I/O works again once the server stops failing"
$TGT --op delete --mode target --tid 1 --force
stop_nbd

# ---- 6. NBD server restart under a writing client ----
# nbdkit memory loses data on restart; nbdkit file keeps it.
truncate -s 64M "$WORK/edge.img"
start_nbd file "$WORK/edge.img"
new_target 3 $IQN_RESTART shale "$NBD_URL"
URL3=iscsi://$PORTAL/$IQN_RESTART/1
NWRITES=60                            # 1 MiB each, 100 ms apart: ~6 s of writes
cmds=(); checks=()
for i in $(seq 0 $((NWRITES - 1))); do
  cmds+=(-c "write -P $((i + 1)) ${i}M 1M" -c "sleep 100")
  checks+=(-c "read -P $((i + 1)) ${i}M 1M")
done
stdbuf -oL qemu-io -f raw "${cmds[@]}" -c flush "$URL3" >"$WORK/writer.out" 2>&1 &
WRITER_PID=$!
sleep 1.5
kill -0 $WRITER_PID 2>/dev/null || fail "writer finished before the restart: $(tail -2 "$WORK/writer.out")"
before=$(grep -c '^wrote' "$WORK/writer.out" || true)
log "restart: $before writes done; kill -9 nbdkit, restart it in 2 s"
stop_nbd -KILL
sleep 2
start_nbd file "$WORK/edge.img"
wrc=0; wait $WRITER_PID || wrc=$?; WRITER_PID=
n_ok=$(grep -c '^wrote' "$WORK/writer.out" || true)
if [[ $wrc -ne 0 ]] || grep -qi 'fail\|error' "$WORK/writer.out" || [[ $n_ok -ne $NWRITES ]]; then
  tail -5 "$WORK/writer.out"; fail "writer saw an error across the restart (rc $wrc, $n_ok/$NWRITES writes)"
fi
# qemu-io prints "1 ops; 00.02 sec (...)" or, past a second, "1 ops; 0:00:03.12 (...)"
slowest_ms=$(python3 -c '
import re, sys
t = [sum(float(p) * 60 ** i for i, p in enumerate(reversed(m.split(":"))))
     for m in re.findall(r"ops; ([0-9:.]+)", open(sys.argv[1]).read())]
print(int(max(t) * 1000))' "$WORK/writer.out")
log "restart: all $n_ok writes succeeded; slowest single write $slowest_ms ms (the one that waited out the restart)"
(( slowest_ms >= 1000 )) || fail "no write waited across the restart (slowest $slowest_ms ms): the check did not test anything"
grep -E 'bs_shale: .*(connection lost|reconnected|resumed)' "$WORK/tgtd.log" | sed 's/^.*bs_shale: //' | sed 's/[0-9]* ms$/N ms/' | sort | uniq -c | sed 's/^/[bs-shale-smoke]    tgtd log: /'
grep -q 'reconnected' "$WORK/tgtd.log" || fail "bs_shale never reconnected: the restart did not hit an in-flight connection"
expect_ok qemu-io -r -f raw "${checks[@]}" "$NBD_URL"
grep -q 'verification failed\|Pattern verification' "$WORK/out" && { grep -m3 -i 'fail' "$WORK/out"; fail "data written across the restart is not in the export"; }
log "restart: all $NWRITES MiB read back from the restarted NBD server"
$TGT --op delete --mode target --tid 3 --force

log "PASS (total $(ms "$T0") ms)"
