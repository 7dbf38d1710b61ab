#!/usr/bin/env bash
# bench/scale.sh: a home folder's worth of small files (issue 18), backer beside
# the FUSE floor and Syncthing, in one run (on demand, not a test). Everything
# runs on this machine, over 127.0.0.1 only.
#
# The workload: BENCH_FILES small files (94 bytes each, every one different) in
# folders of 1,000 (d0000/f000000 ...), created by one Python process (open,
# write, close).
#
#   create     the files are created in node A's mount (`backer mount DIR
#              --listen`) and, for comparison, on the FUSE floor
#              (../shared/fuse-floor with --backing on the same disk, the
#              options bench/mount.sh uses): files per second of each.
#   sync       A's root is left to settle (equal for 2 s), then a fresh node B
#              is mounted (`backer mount`, each the other's peer); the clock
#              runs from starting B's mount until B's root equals A's
#              (`status --json`).
#   probes     while B syncs, one probe every 50 ms on B's mount: a `stat` of a
#              name never looked up before (a new name each time, so no kernel
#              cache can answer) and a readdir of its root; the longest of
#              each is reported (a mount that freezes shows here).
#   peak RSS   VmHWM of each node over its whole run (A's creates included).
#   store      (du -sb of B's store - the files' bytes) / BENCH_FILES, once
#              the sync has settled; also A's.
#   Syncthing  the Debian package (two instances, as bench/sync.sh sets them
#              up, fsWatcherDelayS 1): the files are created in the first
#              instance's folder, it scans them, then the second starts; the
#              clock runs until the second is idle, needs nothing and holds
#              what the first holds. VmHWM of each instance's real process.
#              Only when BENCH_FILES <= 100000 and BENCH_SYNCTHING != 0.
#   B's tree is checked afterwards against the source (`backer export`).
#
# Run as root (apt-get, drop nothing): about 10 minutes at 100k with Syncthing.
#   bench/scale.sh                         # 100,000 files
#   BENCH_FILES=20000 BENCH_SYNCTHING=0 bench/scale.sh   # a quick look
#   BENCH_FILES=1000000 bench/scale.sh     # a million (backer alone)
# Knobs: BENCH_FILES (100000), BENCH_SYNCTHING (1), BENCH_PORT (47400, the next
# 3 too), BENCH_TMPDIR (/var/tmp), BENCH_TIMEOUT (3600 s per wait),
# BACKER_BIN, BENCH_FLOOR_BIN, BENCH_NO_FLOOR=1, BENCH_KEEP=1 (keep the work
# folder). The machine may be shared: timings are rough, memory is robust.

set -euo pipefail
export LC_ALL=C

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FILES=${BENCH_FILES:-100000}
ST=${BENCH_SYNCTHING:-1}
PORT=${BENCH_PORT:-47400}
TMPROOT=${BENCH_TMPDIR:-/var/tmp}
TIMEOUT=${BENCH_TIMEOUT:-3600}
FILE_BYTES=94

BENCH_NAME=scale.sh
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"

case ${1:-} in
-h | --help) sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
"") ;;
*) die "no arguments (knobs are environment variables; --help)" ;;
esac
positive_ints FILES PORT TIMEOUT
((FILES > 100000)) && ST=0
((PORT + 3 < 65536)) || die "BENCH_PORT too high"
need_cmds fusermount3 python3 jq awk du
if [[ $ST != 0 ]]; then
    if ! command -v syncthing >/dev/null || ! command -v curl >/dev/null; then
        [[ $(id -u) == 0 ]] || die "needs syncthing and curl (or BENCH_SYNCTHING=0)"
        say "installing syncthing, curl"
        DEBIAN_FRONTEND=noninteractive apt-get install -y syncthing curl >&2 ||
            { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y syncthing curl >&2; }
    fi
fi
P_A=$PORT P_B=$((PORT + 1)) P_S1=$((PORT + 2)) P_S2=$((PORT + 3)) P_G1=$((PORT + 4)) P_G2=$((PORT + 5))

W=""
MOUNTS=()
DAEMONS=()
PIDS=()
stop_pid() {
    local pid=$1
    alive "$pid" || return 0
    kill "$pid" 2>/dev/null || true
    wait_gone "$pid" 30 || kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$? m p
    set +e
    trap - EXIT INT TERM
    for m in "${MOUNTS[@]}"; do unmount "$m"; done
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    for p in "${DAEMONS[@]}"; do alive "$p" && { wait_gone "$p" 120 || kill -9 "$p" 2>/dev/null; }; done
    if [[ ${BENCH_KEEP:-0} == 1 && -n $W ]]; then say "BENCH_KEEP=1: keeping $W"; W=""; fi
    finish_cleanup "$rc" "$W"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

W=$(mktemp -d "$TMPROOT/backer-scale-bench.XXXXXX")
[[ $(stat -f -c %T "$W") != tmpfs ]] || die "$TMPROOT is tmpfs; set BENCH_TMPDIR to a folder on a disk"

elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
T_HIT=""
wait_for() { # wait_for SECONDS INTERVAL WHAT CMD...
    local limit=$1 iv=$2 what=$3 t0=$EPOCHREALTIME
    shift 3
    until "$@"; do
        awk -v a="$t0" -v b="$EPOCHREALTIME" -v l="$limit" 'BEGIN { exit !(b - a > l) }' &&
            die "timed out after $limit s waiting for $what"
        sleep "$iv"
    done
    T_HIT=$EPOCHREALTIME
}
hwm_mib() { awk '/^VmHWM:/ { printf "%.0f", $2 / 1024 }' "/proc/$1/status"; }

# ------------------------------------------------------------------ binaries

backer_binary
FLOOR_BIN=${BENCH_FLOOR_BIN:-}
if [[ -z $FLOOR_BIN && ${BENCH_NO_FLOOR:-0} != 1 ]]; then
    for d in "$REPO/../shared/fuse-floor" /work/shared/fuse-floor; do
        [[ -f $d/Cargo.toml ]] || continue
        say "building fuse-floor from a copy of $d"
        cp -r "$d" "$W/fuse-floor-src"
        CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}/fuse-floor \
            cargo build --release --manifest-path "$W/fuse-floor-src/Cargo.toml" >&2
        FLOOR_BIN=${CARGO_TARGET_DIR:-$REPO/target}/fuse-floor/release/fuse-floor
        break
    done
fi

# ------------------------------------------------------------------ the workload

CREATE_PY='
import os, sys, time
root, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
t0 = time.perf_counter()
for i in range(n):
    d = f"{root}/d{i // 1000:04d}"
    if i % 1000 == 0:
        os.mkdir(d)
    data = f"file {i:07d}: ".encode().ljust(size, b".")
    fd = os.open(f"{d}/f{i:07d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, data)
    os.close(fd)
print(f"{time.perf_counter() - t0:.3f}")
'
# The probe: every 50 ms a stat of a never-seen name and a readdir of the
# root; it stops when the file STOP exists and prints the longest of each.
PROBE_PY='
import os, sys, time
mnt, stop = sys.argv[1], sys.argv[2]
worst_stat = worst_dir = 0.0
n = 0
while not os.path.exists(stop):
    n += 1
    t = time.perf_counter()
    try:
        os.stat(f"{mnt}/d{n % 1000:04d}/never-{os.getpid()}-{n}")
    except FileNotFoundError:
        pass
    worst_stat = max(worst_stat, time.perf_counter() - t)
    t = time.perf_counter()
    os.listdir(mnt)
    worst_dir = max(worst_dir, time.perf_counter() - t)
    time.sleep(0.05)
print(f"{worst_stat * 1000:.1f} {worst_dir * 1000:.1f} {n}")
'

declare -A R=()
for k in f_create b_create b_rate f_rate ratio b_sync b_stat b_dir b_probes b_rss_a b_rss_b \
    b_store_a b_store_b s_sync s_rss_1 s_rss_2 s_scan; do R[$k]=-; done

# ------------------------------------------------------------------ floor

if [[ -n $FLOOR_BIN && -x $FLOOR_BIN ]]; then
    say "floor: creating $FILES files"
    fm=$W/floor-mnt
    mkdir -p "$fm" "$W/floor-backing"
    MOUNTS+=("$fm")
    "$FLOOR_BIN" "$fm" --writeback --max-write 1048576 --threads 2 --ttl 1 --backing "$W/floor-backing" >>"$W/floor.log" 2>&1 &
    fp=$!
    wait_for 30 0.05 "fuse-floor to mount" is_mounted "$fm"
    R[f_create]=$(python3 -c "$CREATE_PY" "$fm" "$FILES" "$FILE_BYTES")
    unmount "$fm"
    wait_gone "$fp" 60 || true
    rm -rf "$W/floor-backing"
fi

# ------------------------------------------------------------------ backer

b_status() { "$BACKER" --store "$1" status --json 2>/dev/null; }
b_root() { b_status "$1" | jq -r '.root // empty'; }
b_same_root() { local a b; a=$(b_root "$1") && b=$(b_root "$2") || return 1; [[ -n $a && $a == "$b" ]]; }
b_settled() { # the root held still for 2 s
    local r1 r2
    r1=$(b_root "$1")
    sleep 2
    r2=$(b_root "$1")
    [[ -n $r1 && $r1 == "$r2" ]]
}
b_mount() { # b_mount STORE DIR PORT
    mkdir -p "$2"
    MOUNTS+=("$2")
    "$BACKER" --store "$1" mount "$2" --listen "127.0.0.1:$3" >/dev/null ||
        { tail -5 "$1/backer.log" >&2 2>/dev/null; die "backer mount $2 failed"; }
    DAEMONS+=("$(cat "$1/backer.pid")")
}

sa=$W/b-a sb=$W/b-b ma=$W/b-mnt-a mb=$W/b-mnt-b
"$BACKER" --store "$sa" init >/dev/null
"$BACKER" --store "$sb" init >/dev/null
ia=$("$BACKER" --store "$sa" id | tail -1)
ib=$("$BACKER" --store "$sb" id | tail -1)
"$BACKER" --store "$sa" peer add "$ib" "127.0.0.1:$P_B" >/dev/null
"$BACKER" --store "$sb" peer add "$ia" "127.0.0.1:$P_A" >/dev/null

b_mount "$sa" "$ma" "$P_A"
pa=$(cat "$sa/backer.pid")
say "backer: creating $FILES files in A's mount"
R[b_create]=$(python3 -c "$CREATE_PY" "$ma" "$FILES" "$FILE_BYTES")
say "  ${R[b_create]} s; letting A settle"
sync -f "$ma"
wait_for "$TIMEOUT" 0 "A's root to settle" b_settled "$sa"

say "backer: B syncs"
t0=$EPOCHREALTIME
b_mount "$sb" "$mb" "$P_B"
pb=$(cat "$sb/backer.pid")
python3 -c "$PROBE_PY" "$mb" "$W/probe-stop" >"$W/probe.out" &
probe=$!
PIDS+=("$probe")
wait_for "$TIMEOUT" 0.05 "B's root to equal A's" b_same_root "$sa" "$sb"
R[b_sync]=$(elapsed "$t0" "$T_HIT")
touch "$W/probe-stop"
wait "$probe" || die "the probe failed"
read -r R[b_stat] R[b_dir] R[b_probes] <"$W/probe.out"
say "  ${R[b_sync]} s"
wait_for "$TIMEOUT" 0 "B's root to settle" b_settled "$sb"
R[b_rss_a]=$(hwm_mib "$pa")
R[b_rss_b]=$(hwm_mib "$pb")
say "  peak RSS A ${R[b_rss_a]} MiB, B ${R[b_rss_b]} MiB; worst stat ${R[b_stat]} ms, readdir ${R[b_dir]} ms"
R[b_log]="$(grep -c ' WARN ' "$sb/backer.log" || true) warnings in B's log"
fusermount3 -u "$ma"
fusermount3 -u "$mb"
wait_gone "$pa" 300 || die "A did not exit"
wait_gone "$pb" 300 || die "B did not exit"
per_file() { du -sb "$1" | awk -v n="$FILES" -v b="$FILE_BYTES" '{ printf "%.0f", ($1 - n * b) / n }'; }
R[b_store_a]=$(per_file "$sa")
R[b_store_b]=$(per_file "$sb")
say "backer: checking B (export)"
"$BACKER" --store "$sb" export "$W/b-export" >/dev/null
got=$(find "$W/b-export" -type f | wc -l)
((got == FILES)) || die "B's export holds $got files, not $FILES"
bad=$(python3 -c '
import os, sys
root, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
bad = 0
for i in range(n):
    with open(f"{root}/d{i // 1000:04d}/f{i:07d}", "rb") as f:
        bad += f.read() != f"file {i:07d}: ".encode().ljust(size, b".")
print(bad)' "$W/b-export" "$FILES" "$FILE_BYTES")
((bad == 0)) || die "B's export has $bad files with the wrong content"
rm -rf "$W/b-export" "$sa" "$sb"

# ------------------------------------------------------------------ Syncthing

if [[ $ST != 0 ]]; then
    ST_KEY="bench-$RANDOM$RANDOM"
    declare -A ST_ID=() ST_PID=() ST_INNER=() ST_GUI=([1]=$P_G1 [2]=$P_G2)
    st_generate() {
        local h=$W/st-home-$1
        syncthing generate --home "$h" --no-default-folder >/dev/null 2>&1 || die "syncthing generate failed"
        ST_ID[$1]=$(syncthing serve --home "$h" --device-id 2>/dev/null | tail -1)
    }
    st_config() { # st_config N LISTEN OTHER_LISTEN GUI DIR
        local n=$1 other=$((3 - $1))
        mkdir -p "$5/.stfolder"
        cat >"$W/st-home-$n/config.xml" <<EOF
<configuration version="36">
    <folder id="bench" label="bench" path="$5" type="sendreceive" rescanIntervalS="3600" fsWatcherEnabled="true" fsWatcherDelayS="1" ignorePerms="false" autoNormalize="true">
        <filesystemType>basic</filesystemType>
        <device id="${ST_ID[1]}" introducedBy=""></device>
        <device id="${ST_ID[2]}" introducedBy=""></device>
        <minDiskFree unit="%">1</minDiskFree>
    </folder>
    <device id="${ST_ID[$n]}" name="st$n" compression="metadata" introducer="false"><address>dynamic</address></device>
    <device id="${ST_ID[$other]}" name="st$other" compression="metadata" introducer="false"><address>tcp://127.0.0.1:$3</address></device>
    <gui enabled="true" tls="false" debugging="false"><address>127.0.0.1:$4</address><apikey>$ST_KEY</apikey></gui>
$(st_options_xml "$2")
</configuration>
EOF
    }
    st_get() { curl -sf -m 10 -H "X-API-Key: $ST_KEY" "http://127.0.0.1:${ST_GUI[$1]}$2"; }
    st_alive() { st_get "$1" /rest/system/ping >/dev/null; }
    st_start() {
        STNOUPGRADE=1 syncthing serve --home "$W/st-home-$1" --no-browser --no-restart --no-upgrade \
            --logfile="$W/st-$1.log" >/dev/null 2>&1 &
        ST_PID[$1]=$!
        PIDS+=("${ST_PID[$1]}")
        wait_for 60 0.05 "Syncthing $1 to answer" st_alive "$1"
        ST_INNER[$1]=$(pgrep -P "${ST_PID[$1]}" | head -1 || true)
        [[ -n ${ST_INNER[$1]} ]] || ST_INNER[$1]=${ST_PID[$1]}
    }
    st_status() { st_get "$1" "/rest/db/status?folder=bench"; }
    st_scanned() { st_status 1 | jq -e --argjson f "$FILES" '.state == "idle" and .localFiles == $f' >/dev/null; }
    st_in_sync() {
        local s1 s2
        s1=$(st_status 1) && s2=$(st_status 2) || return 1
        jq -en --argjson a "$s1" --argjson b "$s2" \
            '$b.state == "idle" and $b.needTotalItems == 0 and $b.localFiles == $a.localFiles
             and $b.localDirectories == $a.localDirectories and $b.localBytes == $a.localBytes' >/dev/null
    }
    say "Syncthing: $FILES files"
    d1=$W/st-1 d2=$W/st-2
    st_generate 1
    st_generate 2
    st_config 1 "$P_S1" "$P_S2" "$P_G1" "$d1"
    st_config 2 "$P_S2" "$P_S1" "$P_G2" "$d2"
    python3 -c "$CREATE_PY" "$d1" "$FILES" "$FILE_BYTES" >/dev/null
    t0=$EPOCHREALTIME
    st_start 1
    wait_for "$TIMEOUT" 0.2 "Syncthing 1 to scan" st_scanned
    R[s_scan]=$(elapsed "$t0" "$T_HIT")
    t0=$EPOCHREALTIME
    st_start 2
    wait_for "$TIMEOUT" 0.2 "Syncthing 2 to be in sync" st_in_sync
    R[s_sync]=$(elapsed "$t0" "$T_HIT")
    R[s_rss_1]=$(hwm_mib "${ST_INNER[1]}")
    R[s_rss_2]=$(hwm_mib "${ST_INNER[2]}")
    stop_pid "${ST_PID[1]}"
    stop_pid "${ST_PID[2]}"
    got=$(find "$d2" -type f -name 'f*' | wc -l)
    ((got == FILES)) || die "Syncthing 2 holds $got files, not $FILES"
    rm -rf "$d1" "$d2"
fi

# ------------------------------------------------------------------ report

rate() { [[ $1 == - ]] && echo - || awk -v n="$FILES" -v t="$1" 'BEGIN { printf "%.0f", n / t }'; }
R[b_rate]=$(rate "${R[b_create]}")
R[f_rate]=$(rate "${R[f_create]}")
[[ ${R[f_rate]} != - ]] && R[ratio]=$(awk -v a="${R[b_rate]}" -v b="${R[f_rate]}" 'BEGIN { printf "%.2f", a / b }')
printf '\n## bench/scale.sh: %s files of %s bytes in folders of 1,000 (load %s)\n\n' \
    "$FILES" "$FILE_BYTES" "$(cut -d' ' -f1-3 /proc/loadavg)"
printf '| | backer | Syncthing (fsWatcherDelayS 1) | target |\n|---|---|---|---|\n'
printf '| create, files/s (s) | %s (%s s); floor %s (%s s), %sx floor | native folder | >= 0.9x floor |\n' \
    "${R[b_rate]}" "${R[b_create]}" "${R[f_rate]}" "${R[f_create]}" "${R[ratio]}"
printf '| first sync to the fresh peer, s | %s | %s (after a %s s scan) | |\n' "${R[b_sync]}" "${R[s_sync]}" "${R[s_scan]}"
printf '| peak RSS, receiver, MiB | %s | %s | <= 150 |\n' "${R[b_rss_b]}" "${R[s_rss_2]}"
printf '| peak RSS, sender, MiB | %s | %s | <= 150 |\n' "${R[b_rss_a]}" "${R[s_rss_1]}"
printf '| longest stat of a new name on the receiver during the sync, ms | %s (%s probes) | - | <= 100 |\n' "${R[b_stat]}" "${R[b_probes]}"
printf '| longest readdir of the receiver root during the sync, ms | %s | - | <= 100 |\n' "${R[b_dir]}"
printf '| store bytes per file beyond its content, receiver (sender) | %s (%s) | - | <= 600 |\n' "${R[b_store_b]}" "${R[b_store_a]}"
printf '\n%s\n' "${R[b_log]}"
