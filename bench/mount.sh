#!/usr/bin/env bash
# bench/mount.sh: how fast a backer mount is, beside a native folder and the
# FUSE floor, in one run (issue 4, "Benchmark"; on demand, not a test).
#
# What it measures, on three targets that all live on the same disk:
#   native  a plain folder on that disk (under $BENCH_TMPDIR)
#   floor   ../shared/fuse-floor, an in-memory fuser filesystem that writes file
#           data through to a folder on that disk (--backing): the fastest a
#           FUSE filesystem that must put bytes on disk can be on this machine.
#           Run as: fuse-floor MNT --writeback --max-write 1048576 --threads 2
#           --ttl 1 --backing DIR
#   backer  `backer --store S mount DIR` with a fresh store S on that disk
# the same five workloads:
#   seq write   dd bs=1M conv=fsync of BENCH_MB MiB of random bytes (from tmpfs)
#   cold read   dd bs=1M of that file, after `syncfs; echo 3 > drop_caches`
#               (backer is also unmounted and mounted again first)
#   creates     BENCH_FILES new 4 KiB files (distinct random bytes each) in one
#               folder, then sync (timed inside python, plus the sync)
#   untar       tar -xf of a real source tree (the largest crates under
#               ~/.cargo/registry/src, or BENCH_TREE), then sync
#   stat walk   cold `find TREE -ls > /dev/null` of the untarred tree (caches
#               dropped; backer remounted)
# "sync" is `sync -f` (syncfs) of the target's file system, then of the disk's:
# the first pushes a FUSE mount's dirty pages to its daemon, the second makes
# what the daemon wrote to the disk durable (the kernel sends FUSE daemons no
# syncfs request, so backer's own buffers are its business). syncfs rather than
# sync(1) keeps other file systems, e.g. other people's test mounts, out of the
# timings.
# Every run uses fresh targets (new folder, new floor mount, new backer store);
# the table shows the median of BENCH_RUNS runs and the ratios between targets:
# for MiB/s rows the throughput ratio (higher is better), for seconds rows the
# time ratio (lower is better: 2.00x = twice as slow). Beside them are the
# issue's targets: seq write >= 0.85x the floor, cold read >= 0.7x native,
# untar and creates within 1.5x of the floor's time.
#
# Run (as root, so caches can be dropped; needs fuse3, python3 and cargo):
#   sudo bench/mount.sh
#   BENCH_RUNS=1 BENCH_MB=256 bench/mount.sh        # a quick look
# Knobs (environment):
#   BENCH_MB=1024        size of the sequential file, MiB
#   BENCH_RUNS=3         runs per target; the median is reported
#   BENCH_FILES=10000    small files created
#   BENCH_TREE_FILES=2000  take the largest registry crates until this many files
#   BENCH_TREE=DIR       untar a tarball of DIR instead of registry crates
#   BENCH_TMPDIR=/var/tmp  parent of the work folder: must be on the disk to test
#   BENCH_FLOOR_SRC=DIR  fuse-floor sources (default ../shared/fuse-floor next to
#                        this repository, else /work/shared/fuse-floor)
#   BENCH_FLOOR_BIN=FILE a prebuilt fuse-floor (skips building it)
#   BENCH_NO_FLOOR=1     skip the floor even if it is there
#   BACKER_BIN=FILE      a prebuilt backer (default: cargo build --release -p backer)
# The fuse-floor sources are copied into the work folder and built there (the
# shared folder is read-only), with cargo's target folder at
# target/fuse-floor in this repository so that later runs build quickly.
# When the floor is absent (e.g. a user's machine) its columns are skipped with
# a note and the native ratios are still printed. Every mount, node and temp
# folder the script made is removed on exit, also on failure or Ctrl-C.
# Progress goes to stderr, the report to stdout.

set -euo pipefail
export LC_ALL=C

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MB=${BENCH_MB:-1024}
RUNS=${BENCH_RUNS:-3}
NFILES=${BENCH_FILES:-10000}
TREE_MIN_FILES=${BENCH_TREE_FILES:-2000}
TMPROOT=${BENCH_TMPDIR:-/var/tmp}
FLOOR_ARGS=(--writeback --max-write 1048576 --threads 2 --ttl 1)

BENCH_NAME=mount.sh
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"

positive_ints MB RUNS NFILES TREE_MIN_FILES
need_cmds fusermount3 dd tar find python3 diff awk
[[ -d $TMPROOT ]] || die "BENCH_TMPDIR $TMPROOT is not a folder"

# ------------------------------------------------------------------ cleanup

W=""          # work folder on the disk under test
SHM=""        # sources (random bytes, tarball) on tmpfs, when there is room
FLOOR_PID=""
BACKER_STORE=""
MOUNTS=()     # mount points we may have mounted

stop_backer_node() { # the node of $BACKER_STORE, if still running after unmount
    local s=$BACKER_STORE pid
    [[ -n $s && -e $s/backer.pid ]] || return 0
    pid=$(cat "$s/backer.pid" 2>/dev/null || true)
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    if ! wait_gone "$pid" 120; then
        say "backer node $pid did not exit after unmount; sending SIGTERM"
        kill "$pid" 2>/dev/null || true
        wait_gone "$pid" 30 || kill -9 "$pid" 2>/dev/null || true
    fi
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    for m in "${MOUNTS[@]}"; do unmount "$m"; done
    if [[ -n $FLOOR_PID ]]; then
        wait_gone "$FLOOR_PID" 30 || kill "$FLOOR_PID" 2>/dev/null
        wait "$FLOOR_PID" 2>/dev/null
    fi
    stop_backer_node
    finish_cleanup "$rc" "$W" "$SHM"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

W=$(mktemp -d "$TMPROOT/backer-bench.XXXXXX")
[[ $(stat -f -c %T "$W") != tmpfs ]] || die "$TMPROOT is tmpfs; set BENCH_TMPDIR to a folder on a disk"
NATIVE=$W/native
FLOOR_MNT=$W/floor-mnt
BACKER_MNT=$W/backer-mnt
mkdir -p "$NATIVE" "$FLOOR_MNT" "$BACKER_MNT"
MOUNTS=("$FLOOR_MNT" "$BACKER_MNT")

# ------------------------------------------------------------------ caches

if [[ $(id -u) == 0 && -w /proc/sys/vm/drop_caches ]]; then
    CAN_DROP=1
else
    CAN_DROP=0
    say "warning: not root, caches cannot be dropped: 'cold' reads and walks will be warm"
fi
# flush DIR: DIR's file system, then the disk's, to disk (see the header)
flush() {
    sync -f "$1"
    sync -f "$W"
}
drop_caches() { # drop_caches DIR
    flush "$1"
    if ((CAN_DROP)); then echo 3 >/proc/sys/vm/drop_caches; fi
}

# ------------------------------------------------------------------ binaries

backer_binary

FLOOR_BIN=""
FLOOR_NOTE=""
if [[ ${BENCH_NO_FLOOR:-0} == 1 ]]; then
    FLOOR_NOTE="floor skipped: BENCH_NO_FLOOR=1"
elif [[ -n ${BENCH_FLOOR_BIN:-} ]]; then
    FLOOR_BIN=$BENCH_FLOOR_BIN
    [[ -x $FLOOR_BIN ]] || die "BENCH_FLOOR_BIN $FLOOR_BIN is not executable"
else
    FLOOR_SRC=""
    for d in ${BENCH_FLOOR_SRC:+"$BENCH_FLOOR_SRC"} "$REPO/../shared/fuse-floor" /work/shared/fuse-floor; do
        if [[ -f $d/Cargo.toml ]]; then FLOOR_SRC=$(cd "$d" && pwd); break; fi
    done
    if [[ -z $FLOOR_SRC ]]; then
        FLOOR_NOTE="floor skipped: no fuse-floor at ../shared/fuse-floor or /work/shared/fuse-floor (only the native ratios are meaningful)"
    else
        say "building fuse-floor from a copy of $FLOOR_SRC"
        cp -r "$FLOOR_SRC" "$W/fuse-floor-src"
        CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}/fuse-floor \
            cargo build --release --manifest-path "$W/fuse-floor-src/Cargo.toml" >&2
        FLOOR_BIN=${CARGO_TARGET_DIR:-$REPO/target}/fuse-floor/release/fuse-floor
        [[ -x $FLOOR_BIN ]] || die "fuse-floor did not build"
    fi
fi
if [[ -n $FLOOR_NOTE ]]; then say "$FLOOR_NOTE"; fi
TARGETS=(native)
if [[ -n $FLOOR_BIN ]]; then TARGETS+=(floor); fi
TARGETS+=(backer)

# ------------------------------------------------------------------ sources

# The bytes to write live on tmpfs when there is room, so reading them costs
# nothing and drop_caches cannot evict them; else in $W, warmed before use.
shm_need_kb=$(((MB + NFILES * 4 / 1024 + 512) * 1024))
if [[ -d /dev/shm ]] && (($(df -Pk /dev/shm | awk 'NR == 2 { print $4 }') > shm_need_kb)); then
    SHM=$(mktemp -d /dev/shm/backer-bench.XXXXXX)
    SRC=$SHM
    SRC_WARM=1
else
    SRC=$W/src
    mkdir -p "$SRC"
    SRC_WARM=0
fi
warm_sources() { ((SRC_WARM)) || cat "$SRC/random.bin" "$SRC/small.bin" "$SRC/tree.tar" >/dev/null; }

say "generating $MB MiB of random bytes"
head -c $((MB * 1048576)) /dev/urandom >"$SRC/random.bin"
head -c $((NFILES * 4096)) /dev/urandom >"$SRC/small.bin"

# The tree to untar: BENCH_TREE, else the largest source crates (by file
# count) in the cargo registry until there are TREE_MIN_FILES files, else
# /usr/include. The *-pc-windows-gnu crates are prebuilt import libraries,
# not source, and are left out.
if [[ -n ${BENCH_TREE:-} ]]; then
    [[ -d $BENCH_TREE ]] || die "BENCH_TREE $BENCH_TREE is not a folder"
    TREE_PARENT=$(cd "$BENCH_TREE/.." && pwd)
    TREE_PARTS=("$(basename "$(cd "$BENCH_TREE" && pwd)")")
else
    TREE_PARENT=""
    TREE_PARTS=()
    for reg in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/; do
        [[ -d $reg ]] || continue
        TREE_PARENT=${reg%/}
        total=0
        while read -r n name; do
            TREE_PARTS+=("$name")
            total=$((total + n))
            ((total >= TREE_MIN_FILES)) && break
        done < <(cd "$TREE_PARENT" && for c in */; do
            c=${c%/}
            [[ $c == *-pc-windows-gnu-* ]] && continue
            printf '%s %s\n' "$(find "$c" -type f | wc -l)" "$c"
        done | sort -k1,1nr -k2,2)
        break
    done
    if ((${#TREE_PARTS[@]} == 0)); then
        [[ -d /usr/include ]] || die "no source tree found: set BENCH_TREE=DIR"
        TREE_PARENT=/usr
        TREE_PARTS=(include)
    fi
fi
say "making the tarball from $TREE_PARENT: ${TREE_PARTS[*]}"
tar -cf "$SRC/tree.tar" -C "$TREE_PARENT" "${TREE_PARTS[@]}"
mkdir "$W/tree-ref"
tar -xf "$SRC/tree.tar" -C "$W/tree-ref" # what every untar is compared with
TREE_FILES=$(find "$W/tree-ref" ! -type d | wc -l)
TREE_DIRS=$(find "$W/tree-ref" -mindepth 1 -type d | wc -l)
TREE_MIB=$(du -sm "$W/tree-ref" | cut -f1)

# ------------------------------------------------------------------ targets

declare -A RES=()  # "target|workload" -> seconds of each run
declare -A RA=()   # target -> read_ahead_kb of its folder's device
record() { RES[$1|$2]+="$3 "; }

T=0
timeit() { # timeit CMD...: run it and set T to its wall time in seconds
    local t0=$EPOCHREALTIME t1
    "$@"
    t1=$EPOCHREALTIME
    T=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f", b - a }')
}

read_ahead() { cat "/sys/class/bdi/$(stat -c '%Hd:%Ld' "$1")/read_ahead_kb" 2>/dev/null || echo '?'; }

start_floor() {
    local backing=$1
    mkdir -p "$backing"
    "$FLOOR_BIN" "$FLOOR_MNT" "${FLOOR_ARGS[@]}" --backing "$backing" >>"$W/floor.log" 2>&1 &
    FLOOR_PID=$!
    local n=600
    until is_mounted "$FLOOR_MNT"; do
        kill -0 "$FLOOR_PID" 2>/dev/null || { tail -5 "$W/floor.log" >&2; die "fuse-floor exited before mounting"; }
        ((n-- > 0)) || die "fuse-floor did not mount within 30 s"
        sleep 0.05
    done
}
stop_floor() {
    unmount "$FLOOR_MNT"
    wait_gone "$FLOOR_PID" 60 || die "fuse-floor did not exit after unmount"
    wait "$FLOOR_PID" 2>/dev/null || true
    FLOOR_PID=""
}

mount_backer() {
    "$BACKER" --store "$BACKER_STORE" mount "$BACKER_MNT" >/dev/null ||
        { tail -5 "$BACKER_STORE/backer.log" >&2 2>/dev/null; die "backer mount failed"; }
}
unmount_backer() { # and wait for the node to exit (it makes its last commit durable)
    local pid
    pid=$(cat "$BACKER_STORE/backer.pid" 2>/dev/null || true)
    fusermount3 -u "$BACKER_MNT" || die "fusermount3 -u $BACKER_MNT failed"
    local n=6000 # 300 s
    while [[ -e $BACKER_STORE/backer.pid ]]; do
        if [[ $pid =~ ^[0-9]+$ ]] && ! kill -0 "$pid" 2>/dev/null; then break; fi
        ((n-- > 0)) || die "the backer node did not exit within 300 s of the unmount"
        sleep 0.05
    done
}

# cold TARGET: make the next access to TARGET's folder cold
cold() {
    if [[ $1 == backer ]]; then
        flush "$2"
        unmount_backer
        drop_caches "$W"
        mount_backer
    else
        drop_caches "$2" # the floor keeps its metadata in memory by design: no remount
    fi
}

CREATES_PY='
import os, sys, time
d, n, src = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(src, "rb") as f:
    data = memoryview(f.read(n * 4096))
os.mkdir(d)
t0 = time.perf_counter()
for i in range(n):
    fd = os.open(f"{d}/f{i:05d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, data[i * 4096:(i + 1) * 4096])
    os.close(fd)
print(f"{time.perf_counter() - t0:.6f}")
'

untar() { tar -xf "$SRC/tree.tar" -C "$1"; flush "$1"; }

# workloads TARGET DIR: the five workloads in DIR (an empty folder)
workloads() {
    local t=$1 d=$2 size n py
    RA[$t]=$(read_ahead "$d")

    say "  $t: sequential write"
    warm_sources
    flush "$d"
    timeit dd if="$SRC/random.bin" of="$d/big" bs=1M count="$MB" conv=fsync status=none
    record "$t" write "$T"
    size=$(stat -c %s "$d/big")
    ((size == MB * 1048576)) || die "$t: big file is $size bytes, expected $((MB * 1048576))"

    say "  $t: cold read"
    cold "$t" "$d"
    timeit dd if="$d/big" of=/dev/null bs=1M status=none
    record "$t" read "$T"

    say "  $t: $NFILES creates"
    warm_sources
    flush "$d"
    py=$(python3 -c "$CREATES_PY" "$d/small" "$NFILES" "$SRC/small.bin")
    timeit flush "$d"
    record "$t" creates "$(awk -v a="$py" -v b="$T" 'BEGIN { printf "%.6f", a + b }')"
    n=$(find "$d/small" -type f | wc -l)
    ((n == NFILES)) || die "$t: $n small files, expected $NFILES"

    say "  $t: untar"
    warm_sources
    mkdir "$d/tree"
    flush "$d"
    timeit untar "$d/tree"
    record "$t" untar "$T"

    say "  $t: cold stat walk"
    cold "$t" "$d"
    timeit find "$d/tree" -ls >/dev/null
    record "$t" walk "$T"
    diff -r -q --no-dereference "$W/tree-ref" "$d/tree" >&2 || die "$t: the untarred tree differs from the tarball"
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
for ((run = 1; run <= RUNS; run++)); do
    say "run $run of $RUNS"
    for t in "${TARGETS[@]}"; do
        case $t in
        native)
            mkdir "$NATIVE/run$run"
            workloads native "$NATIVE/run$run"
            rm -rf "$NATIVE/run$run"
            ;;
        floor)
            start_floor "$W/floor-backing-$run"
            workloads floor "$FLOOR_MNT"
            stop_floor
            rm -rf "$W/floor-backing-$run"
            ;;
        backer)
            BACKER_STORE=$W/store-$run
            "$BACKER" --store "$BACKER_STORE" init >/dev/null
            mount_backer
            workloads backer "$BACKER_MNT"
            unmount_backer
            STORE_MIB=$(du -sm "$BACKER_STORE" | cut -f1)
            rm -rf "$BACKER_STORE"
            BACKER_STORE=""
            ;;
        esac
        sync -f "$W"
    done
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ------------------------------------------------------------------ report

median() { printf '%s\n' $1 | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
has() { [[ -n ${RES[$1|$2]:-} ]]; }
med() { median "${RES[$1|$2]}"; }

# ratio WORKLOAD A B: throughput A/B for write and read, time A/B otherwise
ratio() {
    has "$2" "$1" && has "$3" "$1" || { echo "-"; return; }
    local a b
    a=$(med "$2" "$1")
    b=$(med "$3" "$1")
    case $1 in
    write | read) awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2fx", b / a }' ;;
    *) awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2fx", a / b }' ;;
    esac
}
cell() { # cell TARGET WORKLOAD
    has "$1" "$2" || { echo "-"; return; }
    local s
    s=$(med "$1" "$2")
    case $2 in
    write | read) awk -v s="$s" -v mb="$MB" 'BEGIN { printf "%.0f MiB/s", mb / s }' ;;
    *) awk -v s="$s" 'BEGIN { printf "%.2f s", s }' ;;
    esac
}
# target WORKLOAD: "goal|met"
goal() {
    local r lim cmp what
    case $1 in
    write) what="backer/floor >= 0.85x"; r=$(ratio write backer floor); lim=0.85; cmp=ge ;;
    read) what="backer/native >= 0.70x"; r=$(ratio read backer native); lim=0.70; cmp=ge ;;
    creates | untar) what="backer/floor <= 1.50x"; r=$(ratio "$1" backer floor); lim=1.50; cmp=le ;;
    *) echo "(none)|"; return ;;
    esac
    if [[ $r == - ]]; then echo "$what|n/a (no floor)"; return; fi
    if awk -v r="${r%x}" -v l="$lim" -v c="$cmp" 'BEGIN { exit !((c == "ge") ? r >= l : r <= l) }'; then
        echo "$what|yes"
    else
        echo "$what|NO"
    fi
}

label() {
    case $1 in
    write) echo "seq write ${MB} MiB + fsync" ;;
    read) echo "cold seq read ${MB} MiB" ;;
    creates) echo "$NFILES x 4 KiB creates + sync" ;;
    untar) echo "untar ($TREE_FILES files) + sync" ;;
    walk) echo "cold stat walk (find -ls)" ;;
    esac
}

cmdline="bench/mount.sh"
for v in BENCH_MB BENCH_RUNS BENCH_FILES BENCH_TREE_FILES BENCH_TREE BENCH_TMPDIR BENCH_NO_FLOOR; do
    if [[ -n ${!v:-} ]]; then cmdline="$v=${!v} $cmdline"; fi
done
rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')
if [[ -n $(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null) ]]; then rev+=" (with uncommitted changes)"; fi

echo
echo "backer mount benchmark: $(date -u '+%Y-%m-%d %H:%M UTC'), backer $rev"
echo "command: $cmdline   (median of $RUNS run(s))"
echo "machine: $(nproc) CPUs, kernel $(uname -r), disk: $(df -PT "$W" | awk 'NR == 2 { print $1 " (" $2 ")" }') under $TMPROOT"
echo "load average: $LOAD_START at start, $LOAD_END at end"
if awk -v a="${LOAD_START%% *}" -v n="$(nproc)" 'BEGIN { exit !(a > n / 2) }'; then
    echo "NOTE: the load average at start was above half the CPUs: other work may add noise (see every run's time below)"
fi
echo "tree: $TREE_FILES files, $TREE_DIRS folders, $TREE_MIB MiB: ${TREE_PARTS[*]}"
if [[ -n $FLOOR_BIN ]]; then
    echo "floor: fuse-floor MNT ${FLOOR_ARGS[*]} --backing DIR (DIR on the same disk)"
else
    echo "$FLOOR_NOTE"
fi
ra="read_ahead_kb:"
for t in "${TARGETS[@]}"; do ra+=" $t ${RA[$t]}"; done
echo "$ra; backer store after the last run: ${STORE_MIB:-?} MiB on disk"
((CAN_DROP)) || echo "WARNING: not root: caches were not dropped, 'cold' rows are warm"
echo
fmt='%-32s %12s %12s %12s %14s %13s %13s   %-22s %s\n'
# shellcheck disable=SC2059
printf "$fmt" workload native floor backer backer/native backer/floor floor/native "target" met
for w in write read creates untar walk; do
    IFS='|' read -r what met <<<"$(goal "$w")"
    # shellcheck disable=SC2059
    printf "$fmt" "$(label "$w")" "$(cell native "$w")" "$(cell floor "$w")" "$(cell backer "$w")" \
        "$(ratio "$w" backer native)" "$(ratio "$w" backer floor)" "$(ratio "$w" floor native)" "$what" "$met"
done
echo
echo "ratios: MiB/s rows divide throughputs (higher is better for the first name);"
echo "        seconds rows divide times (lower is better: 2.00x = twice as slow)."
echo "cold: caches dropped (syncfs; echo 3 > /proc/sys/vm/drop_caches); backer is also"
echo "      unmounted and mounted again; the floor keeps its metadata in memory."
echo
echo "seconds per run:"
for w in write read creates untar walk; do
    line=$(printf '  %-32s' "$(label "$w")")
    for t in "${TARGETS[@]}"; do
        line+=" $t:"
        for s in ${RES[$t|$w]}; do line+=$(printf ' %.3f' "$s"); done
    done
    echo "$line"
done
