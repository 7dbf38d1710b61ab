#!/usr/bin/env bash
# bench/sync.sh: backer's replication beside Syncthing and rsync, on the same
# data, in one run (on demand, not a test). Everything runs on this machine,
# over 127.0.0.1 only.
#
# The contestants:
#   backer     node A = `backer mount DIR --listen 127.0.0.1:PA`; node B = a
#              second mount (latency) or `backer replica --listen
#              127.0.0.1:PB` (the rest); each added to the other with
#              `peer add ID ADDR`. "Converged" = equal roots in `status --json`
#              (DESIGN.md: equal roots iff equal trees).
#   syncthing  the Debian package: two instances (`syncthing serve --home H
#              --no-restart`: a small monitor process and the real one, its
#              child, which is the one measured), each with its own home, GUI/
#              REST on 127.0.0.1, listening on tcp://127.0.0.1:P, global and
#              local discovery, relays, NAT, usage and crash reporting and
#              upgrades off, setLowPriority off; one shared send-receive folder
#              with the watcher on (fsWatcherDelayS = BENCH_ST_DELAY, 10 = its
#              default). "In sync" = the REST API of the receiving instance
#              says so (see each workload).
#   rsync      `rsync -a` between two local folders (no daemon, no ssh).
#
# The workloads (one fresh pair of nodes per group):
#   latency    BENCH_WRITES times: rewrite one small file in A's folder (open,
#              write ~30 bytes of new content, close) and poll the same file in
#              B's folder every 2 ms until it has that content; save-to-peer
#              latency = close-to-seen time. backer: two mounts; Syncthing: the
#              two instances' folders. p50 and p99 are nearest-rank (with 50
#              samples p99 is the slowest). rsync has no live mode: "-".
#   bulk       the initial sync of a real source tree (BENCH_TREE, else the
#              largest source crates of the cargo registry until BENCH_TREE_MB
#              MiB) to an empty peer. backer: the tree is copied into A's mount
#              first; the clock runs from starting the replica until its root
#              equals A's. Syncthing: the tree is in the first instance's
#              folder and scanned before the clock starts; the clock runs from
#              starting the second instance until its folder status is idle
#              with nothing needed and the first's file and byte counts.
#              rsync: `rsync -a` into an empty folder, plus `sync -f` of that
#              folder (backer and Syncthing hand over durable copies; rsync's
#              time without the sync is in the raw numbers).
#   peak RSS   VmHWM of each backer node and each Syncthing instance, reset
#              (echo 5 > /proc/PID/clear_refs) on the sending side just before
#              the bulk sync starts (so A's copy-in and S1's scan do not
#              count) and read when it is done; the receiving side is a fresh
#              process.
#   overwrite  a file of BENCH_BIG_MB MiB random bytes is synced first (for
#              Syncthing written beside the folder and renamed in, so that its
#              watcher cannot send a half-written file first), then
#              1 MiB of new random bytes is written over its middle (dd
#              conv=notrunc at a 1 MiB-aligned offset, no fsync). backer and
#              Syncthing: bytes on the wire = IP bytes of every packet between
#              the two nodes' ports in both directions, counted by an
#              iptables chain on the OUTPUT hook of lo (loopback packets pass
#              OUTPUT once), from just before the write until 1 s after
#              convergence; converged = from the end of the write until B's
#              root equals A's new root (backer) / the receiver's copy has the
#              sender's new version (Syncthing, /rest/db/file). rsync:
#              `rsync -a -I --no-W --stats` of the file onto its old copy in a
#              local folder; a local rsync defaults to --whole-file, --no-W
#              makes it run the delta algorithm over its pipe as it would over
#              ssh: its "Literal data" is the bytes it had to send.
#              The raw numbers add, for backer, how much its pack files grew
#              (the new chunk bytes) and how many datagrams the kernel dropped
#              at each node's UDP socket for a full receive buffer (QUIC then
#              resends them): what chunking costs apart from what transport
#              costs.
#   The trees are checked afterwards: diff -r against the source for
#   Syncthing, `backer export` of the replica for backer.
#
# Goals (the issue): backer latency p50 < 100 ms; bulk <= 1.5x rsync; overwrite
# on the wire <= 1.3x the changed bytes (1 MiB) and converged in < 0.5 s;
# peak RSS of each backer node below the matching Syncthing instance.
#
# Run (as root: iptables for the byte counts, clear_refs, apt-get):
#   bench/sync.sh --install        # apt-get update + install syncthing, rsync,
#                                  # jq, curl, iptables when missing, then run
#   bench/sync.sh                  # about 10 minutes with the defaults (most of
#                                  # it Syncthing's 10 s watcher delay x 50)
#   BENCH_BIG_MB=64 BENCH_WRITES=10 BENCH_ST_DELAY=1 bench/sync.sh  # a quick look
# Knobs (environment):
#   BENCH_TREE=DIR         source tree for the bulk sync (default: registry crates)
#   BENCH_TREE_MB=100      size of the default tree, in du's MiB (largest crates first, one
#                          version of each; the prebuilt windows import-library
#                          crates are left out)
#   BENCH_BIG_MB=256       size of the file that gets the 1 MiB overwrite
#   BENCH_WRITES=50        latency samples per tool
#   BENCH_ST_DELAY=10      Syncthing's fsWatcherDelayS (10 is its default; 1 is
#                          the least; it dominates its latency)
#   BENCH_PORT=47300       first of the 127.0.0.1 ports used (the next 7 too)
#   BENCH_TMPDIR=/var/tmp  parent of the work folder (on a disk, not tmpfs)
#   BENCH_TIMEOUT=900      seconds before any one wait gives up
#   BACKER_BIN=FILE        a prebuilt backer (default: cargo build --release -p backer)
#   BENCH_KEEP=1           keep the work folder (logs, stores, Syncthing homes)
#   BENCH_ONLY=LIST        run only these of backer,syncthing,rsync (comma-separated)
# Every mount, process, iptables chain and temp folder the script made is
# removed on exit, also on failure or Ctrl-C. Progress goes to stderr, the
# report to stdout.

set -euo pipefail
export LC_ALL=C

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TREE_MB=${BENCH_TREE_MB:-100}
BIG_MB=${BENCH_BIG_MB:-256}
WRITES=${BENCH_WRITES:-50}
ST_DELAY=${BENCH_ST_DELAY:-10}
PORT=${BENCH_PORT:-47300}
TMPROOT=${BENCH_TMPDIR:-/var/tmp}
TIMEOUT=${BENCH_TIMEOUT:-900}
CHANGED=1048576 # the overwrite, bytes

BENCH_NAME=sync.sh
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"

INSTALL=0
for a in "$@"; do
    case $a in
    --install) INSTALL=1 ;;
    -h | --help) sed -n '2,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$a' (only --install)" ;;
    esac
done

positive_ints TREE_MB BIG_MB WRITES ST_DELAY PORT TIMEOUT
((BIG_MB >= 4)) || die "BENCH_BIG_MB must be at least 4"
((PORT + 7 < 65536)) || die "BENCH_PORT too high"

ROOT=0
if [[ $(id -u) == 0 ]]; then ROOT=1; fi

need_pkgs=()
for c in syncthing:syncthing rsync:rsync jq:jq curl:curl; do
    command -v "${c%%:*}" >/dev/null || need_pkgs+=("${c#*:}")
done
if ((ROOT)) && ! command -v iptables >/dev/null; then need_pkgs+=(iptables); fi
if ((${#need_pkgs[@]})); then
    if ((INSTALL && ROOT)); then
        say "installing: ${need_pkgs[*]}"
        apt-get update >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${need_pkgs[@]}" >&2
    else
        die "missing ${need_pkgs[*]}: run as root with --install, or apt-get install ${need_pkgs[*]}"
    fi
fi
need_cmds fusermount3 python3 syncthing rsync jq curl dd diff cmp awk pgrep
[[ -d $TMPROOT ]] || die "BENCH_TMPDIR $TMPROOT is not a folder"

# ports: backer A, B (latency), A, replica (bulk); Syncthing 1, 2 (listen), 1, 2 (GUI)
P_LAT_A=$PORT P_LAT_B=$((PORT + 1)) P_A=$((PORT + 2)) P_R=$((PORT + 3))
P_S1=$((PORT + 4)) P_S2=$((PORT + 5)) P_G1=$((PORT + 6)) P_G2=$((PORT + 7))
if command -v ss >/dev/null; then
    for p in $(seq "$PORT" $((PORT + 7))); do
        [[ -z $(ss -Htuln "sport = :$p" 2>/dev/null) ]] || die "port $p is in use: set BENCH_PORT"
    done
fi

# ------------------------------------------------------------------ cleanup

W=""            # work folder on disk
SHM=""          # random sources on tmpfs
MOUNTS=()       # backer mount points
DAEMONS=()      # pids of backer mount daemons (they exit after the unmount)
PIDS=()         # pids we started directly (replicas, Syncthing)
CHAIN=""        # our iptables chain

stop_pid() { # SIGTERM, then SIGKILL after 30 s
    local pid=$1
    alive "$pid" || return 0
    kill "$pid" 2>/dev/null || true
    wait_gone "$pid" 30 || { say "pid $pid ignored SIGTERM for 30 s: SIGKILL"; kill -9 "$pid" 2>/dev/null || true; }
    wait "$pid" 2>/dev/null || true
}
chain_remove() {
    [[ -n $CHAIN ]] || return 0
    iptables -D OUTPUT -o lo -j "$CHAIN" 2>/dev/null || true
    iptables -F "$CHAIN" 2>/dev/null || true
    iptables -X "$CHAIN" 2>/dev/null || true
    CHAIN=""
}

cleanup() {
    local rc=$? m p
    set +e
    trap - EXIT INT TERM
    for m in "${MOUNTS[@]}"; do unmount "$m"; done
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    for p in "${DAEMONS[@]}"; do
        alive "$p" || continue
        wait_gone "$p" 60 || { kill "$p" 2>/dev/null; wait_gone "$p" 30 || kill -9 "$p" 2>/dev/null; }
    done
    chain_remove
    if [[ ${BENCH_KEEP:-0} == 1 && -n $W ]]; then
        say "BENCH_KEEP=1: keeping $W (logs, stores)"
        W=""
    fi
    finish_cleanup "$rc" "$W" "$SHM"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

W=$(mktemp -d "$TMPROOT/backer-sync-bench.XXXXXX")
[[ $(stat -f -c %T "$W") != tmpfs ]] || die "$TMPROOT is tmpfs; set BENCH_TMPDIR to a folder on a disk"

# ------------------------------------------------------------------ helpers

elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", b - a }'; }

T_HIT=""
# wait_for SECONDS INTERVAL WHAT CMD...: run CMD until it succeeds; T_HIT = when
wait_for() {
    local limit=$1 iv=$2 what=$3 t0=$EPOCHREALTIME
    shift 3
    until "$@"; do
        if awk -v a="$t0" -v b="$EPOCHREALTIME" -v l="$limit" 'BEGIN { exit !(b - a > l) }'; then
            die "timed out after $limit s waiting for $what"
        fi
        sleep "$iv"
    done
    T_HIT=$EPOCHREALTIME
}

hwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
reset_hwm() { if ((ROOT)) || [[ -O /proc/$1 ]]; then echo 5 >"/proc/$1/clear_refs"; fi; }

# --- wire byte counts: an iptables chain on lo's OUTPUT, one counting rule per tool
WIRE_NOTE=""
if ((ROOT)) && command -v iptables >/dev/null; then
    CHAIN="bsb$$"
    iptables -N "$CHAIN" 2>/dev/null || die "cannot create iptables chain $CHAIN"
    # Each backer node sends from its listen port (QUIC: one UDP socket per
    # node). A Syncthing connection runs from the dialler's listen port (it
    # dials with SO_REUSEPORT) or an ephemeral one to the other's listen port;
    # the rules are disjoint, so no packet counts twice.
    iptables -A "$CHAIN" -p udp --sport "$P_A"                      # 1: backer A -> replica
    iptables -A "$CHAIN" -p udp --sport "$P_R"                      # 2: backer replica -> A
    iptables -A "$CHAIN" -p tcp --sport "$P_S1"                     # 3: Syncthing 1 -> 2
    iptables -A "$CHAIN" -p tcp ! --sport "$P_S1" --dport "$P_S2"   # 4: Syncthing 1 -> 2
    iptables -A "$CHAIN" -p tcp --sport "$P_S2"                     # 5: Syncthing 2 -> 1
    iptables -A "$CHAIN" -p tcp ! --sport "$P_S2" --dport "$P_S1"   # 6: Syncthing 2 -> 1
    iptables -I OUTPUT 1 -o lo -j "$CHAIN"
else
    WIRE_NOTE="not root (or no iptables): bytes on the wire not counted"
    say "warning: $WIRE_NOTE"
fi
wire_zero() { [[ -z $CHAIN ]] || iptables -Z "$CHAIN"; }
wire_bytes() { # wire_bytes RULE...: "bytes packets" matched by these rules since the last zero
    [[ -n $CHAIN ]] || { echo "- -"; return; }
    iptables -L "$CHAIN" -v -x -n --line-numbers |
        awk -v rules=" $* " 'index(rules, " " $1 " ") { b += $3; p += $2 } END { print b + 0, p + 0 }'
}

# ------------------------------------------------------------------ binaries and data

backer_binary

if [[ -d /dev/shm ]] && (($(df -Pk /dev/shm | awk 'NR == 2 { print $4 }') > (BIG_MB + 64) * 1024)); then
    SHM=$(mktemp -d /dev/shm/backer-sync-bench.XXXXXX)
else
    SHM=$W/src-random
    mkdir -p "$SHM"
fi
say "generating $BIG_MB MiB + 1 MiB of random bytes"
head -c $((BIG_MB * 1048576)) /dev/urandom >"$SHM/big.bin"
head -c "$CHANGED" /dev/urandom >"$SHM/patch.bin"
PATCH_AT=$((BIG_MB / 2)) # MiB
cp "$SHM/big.bin" "$W/big-patched.bin"
dd if="$SHM/patch.bin" of="$W/big-patched.bin" bs=1M seek="$PATCH_AT" count=1 conv=notrunc status=none
put_big() { dd if="$SHM/big.bin" of="$1" bs=1M conv=fsync status=none; }
patch_big() { dd if="$SHM/patch.bin" of="$1" bs=1M seek="$PATCH_AT" count=1 conv=notrunc status=none; }

# The tree: BENCH_TREE, else the largest source crates of the cargo registry
# (by size, one version of each) until TREE_MB MiB. Prebuilt import-library
# crates are left out.
TREE=$W/tree
mkdir "$TREE"
if [[ -n ${BENCH_TREE:-} ]]; then
    [[ -d $BENCH_TREE ]] || die "BENCH_TREE $BENCH_TREE is not a folder"
    TREE_DESC=$(cd "$BENCH_TREE" && pwd)
    cp -a "$BENCH_TREE/." "$TREE/"
else
    reg=""
    for d in "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/; do [[ -d $d ]] && reg=${d%/} && break; done
    [[ -n $reg ]] || die "no cargo registry sources found: set BENCH_TREE=DIR"
    total=0 parts=()
    while read -r kb name; do
        parts+=("$name")
        total=$((total + kb))
        ((total >= TREE_MB * 1024)) && break
    done < <(cd "$reg" && du -sk -- */ | sed 's#/$##' | grep -Ev -- '-pc-windows-gnu-|[[:space:]]windows_[a-z0-9_]+_(gnu|gnullvm|msvc)-' |
        sort -k1,1nr -k2,2 | awk '{ c = $2; sub(/-[0-9]+\.[0-9]+\.[0-9]+.*$/, "", c) } !seen[c]++')
    (cd "$reg" && cp -a -- "${parts[@]}" "$TREE/")
    TREE_DESC="${#parts[@]} crates of $reg: ${parts[*]:0:6}"
    if ((${#parts[@]} > 6)); then TREE_DESC+=" ..."; fi
fi
TREE_FILES=$(find "$TREE" -type f | wc -l)
TREE_DIRS=$(find "$TREE" -mindepth 1 -type d | wc -l)
TREE_LINKS=$(find "$TREE" -type l | wc -l)
TREE_BYTES=$(find "$TREE" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
TREE_MIB=$(awk -v b="$TREE_BYTES" 'BEGIN { printf "%.1f", b / 1048576 }')
say "tree: $TREE_FILES files, $TREE_DIRS folders, $TREE_MIB MiB"
find "$TREE" -type f -exec cat {} + >/dev/null # warm the cache for everyone

declare -A R=() # results ("-" until measured)
for k in b_big b_big_pk b_big_wire b_bulk b_commits b_conv b_drops_a b_drops_all \
    b_drops_r b_lat_log b_lat_p50 b_lat_p99 b_log b_packs_a b_packs_r b_rss_a \
    b_rss_a0 b_rss_r b_store_a b_store_r b_wire b_wire_ab b_wire_ba b_wire_pk r_bulk \
    r_bulk_nosync r_conv r_literal r_matched r_recv r_sent s_big s_big_pk s_big_wire \
    s_bulk s_conv s_lat_p50 s_lat_p99 s_rss_1 s_rss_10 s_rss_2 s_rss_mon s_wire \
    s_wire_12 s_wire_21 s_wire_pk; do R[$k]=-; done

LATENCY_PY='
import os, sys, time
a, b, n, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
limit = float(sys.argv[5])
def put(path, data):
    with open(path, "wb") as f:
        f.write(data)
def seen(path, data, t0):
    while True:
        try:
            with open(path, "rb") as f:
                if f.read() == data:
                    return time.perf_counter()
        except FileNotFoundError:
            pass
        if time.perf_counter() - t0 > limit:
            sys.exit(f"no sign of the write on the peer after {limit} s")
        time.sleep(0.002)
data = b"warm-up\n"
t0 = time.perf_counter()
put(a, data)
seen(b, data, t0)          # the first write creates the file: not counted
time.sleep(0.5)
res = []
for i in range(n):
    data = f"write {i} of {n} at {time.time_ns()}\n".encode()
    put(a, data)           # open, write, close
    t0 = time.perf_counter()
    res.append(seen(b, data, t0) - t0)
    time.sleep(0.2)
with open(out, "w") as f:
    f.write("".join(f"{x:.6f}\n" for x in res))
'
# pct FILE P: nearest-rank percentile of the numbers in FILE
pct() { sort -g "$1" | awk -v p="$2" '{ a[NR] = $1 } END { r = int(p / 100 * NR); if (r < p / 100 * NR) r++; if (r < 1) r = 1; print a[r] }'; }

# ------------------------------------------------------------------ backer

b_status() { "$BACKER" --store "$1" status --json 2>/dev/null; }
b_root() { b_status "$1" | jq -r '.root // empty'; }
b_connected() { [[ $(b_status "$1" | jq -r '[.peers[].connected] | all and (length > 0)') == true ]]; }
b_same_root() { # b_same_root S1 S2 [NOT]: equal roots (and, with NOT, not that one)
    local a b
    a=$(b_root "$1") && b=$(b_root "$2") || return 1
    [[ -n $a && $a == "$b" && $a != "${3:-}" ]]
}
b_init_pair() { # b_init_pair SA SB PORT_A PORT_B: two stores, each the other's peer
    "$BACKER" --store "$1" init >/dev/null
    "$BACKER" --store "$2" init >/dev/null
    local ia ib
    ia=$("$BACKER" --store "$1" id | tail -1)
    ib=$("$BACKER" --store "$2" id | tail -1)
    "$BACKER" --store "$1" peer add "$ib" "127.0.0.1:$4" >/dev/null
    "$BACKER" --store "$2" peer add "$ia" "127.0.0.1:$3" >/dev/null
}
b_mount() { # b_mount STORE DIR PORT
    mkdir -p "$2"
    MOUNTS+=("$2")
    "$BACKER" --store "$1" mount "$2" --listen "127.0.0.1:$3" >/dev/null ||
        { tail -5 "$1/backer.log" >&2 2>/dev/null; die "backer mount $2 failed"; }
    DAEMONS+=("$(cat "$1/backer.pid")")
}
b_unmount() { # b_unmount STORE DIR: and wait for the node to exit
    local pid
    pid=$(cat "$1/backer.pid" 2>/dev/null || true)
    fusermount3 -u "$2" || die "fusermount3 -u $2 failed"
    if [[ $pid =~ ^[0-9]+$ ]]; then wait_gone "$pid" 300 || die "the backer node $pid did not exit within 300 s of the unmount"; fi
}
b_pid() { b_status "$1" | jq -r '.pid'; }
# udp_drops PORT: datagrams the kernel dropped at the UDP socket bound to
# 127.0.0.1:PORT (its receive buffer was full), from /proc/net/udp
udp_drops() { awk -v a="$(printf '0100007F:%04X' "$1")" '$2 == a { d += $NF } END { print d + 0 }' /proc/net/udp; }
packs_bytes() { find "$1/packs" -type f -printf '%s\n' 2>/dev/null | awk '{ s += $1 } END { print s + 0 }'; }
b_log_summary() { # sessions and reconnects in a node's log, and its first warnings
    local log=$1 w
    printf 'connects %s, disconnects %s, warnings %s' \
        "$(grep -c 'peer connected' "$log" || true)" "$(grep -c 'peer disconnected' "$log" || true)" \
        "$(grep -c ' WARN ' "$log" || true)"
    w=$(grep ' WARN ' "$log" | sed -E 's/^[^ ]+ +WARN +//; s/peer=[^ ]+ //g' | sort | uniq -c | sort -rn | head -3 |
        awk '{ $1 = $1 "x"; print }' | cut -c1-160 | paste -sd';' || true)
    if [[ -n $w ]]; then printf ' (%s)' "$w"; fi
}

bench_backer_latency() {
    say "backer: latency, $WRITES writes between two mounts"
    local sa=$W/b-lat-a sb=$W/b-lat-b ma=$W/b-lat-mnt-a mb=$W/b-lat-mnt-b
    b_init_pair "$sa" "$sb" "$P_LAT_A" "$P_LAT_B"
    b_mount "$sa" "$ma" "$P_LAT_A"
    b_mount "$sb" "$mb" "$P_LAT_B"
    wait_for 60 0.05 "the backer mounts to connect" b_connected "$sa"
    python3 -c "$LATENCY_PY" "$ma/latency.txt" "$mb/latency.txt" "$WRITES" "$W/lat-backer" 60 ||
        die "backer latency run failed (logs: $sa/backer.log $sb/backer.log)"
    R[b_lat_p50]=$(pct "$W/lat-backer" 50)
    R[b_lat_p99]=$(pct "$W/lat-backer" 99)
    R[b_lat_log]="A: $(b_log_summary "$sa/backer.log"); B: $(b_log_summary "$sb/backer.log")"
    b_unmount "$sa" "$ma"
    b_unmount "$sb" "$mb"
}

bench_backer_bulk() {
    local sa=$W/b-a sr=$W/b-r ma=$W/b-mnt-a pa pr t0 old bytes pk
    say "backer: bulk sync of the tree to a replica"
    b_init_pair "$sa" "$sr" "$P_A" "$P_R"
    b_mount "$sa" "$ma" "$P_A"
    cp -a "$TREE/." "$ma/"
    sync -f "$ma"
    # let the copy-in settle: one root for a whole second
    local r1 r2=""
    r1=$(b_root "$sa")
    while sleep 1; r2=$(b_root "$sa"); [[ $r1 != "$r2" ]]; do r1=$r2; done
    pa=$(b_pid "$sa")
    reset_hwm "$pa"
    R[b_rss_a0]=$(rss_kb "$pa")
    t0=$EPOCHREALTIME
    "$BACKER" --store "$sr" replica --listen "127.0.0.1:$P_R" 2>"$W/b-replica.log" &
    pr=$!
    PIDS+=("$pr")
    wait_for "$TIMEOUT" 0.02 "the backer replica to reach A's root" b_same_root "$sa" "$sr"
    R[b_bulk]=$(elapsed "$t0" "$T_HIT")
    R[b_rss_a]=$(hwm_kb "$pa")
    R[b_rss_r]=$(hwm_kb "$pr")
    say "  ${R[b_bulk]} s"

    say "backer: the $BIG_MB MiB file"
    wire_zero
    t0=$EPOCHREALTIME
    old=$(b_root "$sa")
    put_big "$ma/big.bin"
    wait_for "$TIMEOUT" 0.02 "the replica to get the big file" b_same_root "$sa" "$sr" "$old"
    R[b_big]=$(elapsed "$t0" "$T_HIT")
    sleep 1
    read -r bytes pk < <(wire_bytes 1 2)
    R[b_big_wire]=$bytes R[b_big_pk]=$pk
    sleep 1

    say "backer: 1 MiB overwrite"
    old=$(b_root "$sa")
    local packs_a packs_r commits
    packs_a=$(packs_bytes "$sa") packs_r=$(packs_bytes "$sr") commits=$(b_status "$sa" | jq -r '.commits // 0')
    local drops_a drops_r
    drops_a=$(udp_drops "$P_A") drops_r=$(udp_drops "$P_R")
    wire_zero
    patch_big "$ma/big.bin"
    t0=$EPOCHREALTIME
    wait_for 120 0.005 "the replica to get the overwrite" b_same_root "$sa" "$sr" "$old"
    R[b_conv]=$(elapsed "$t0" "$T_HIT")
    sleep 1
    read -r bytes pk < <(wire_bytes 1 2)
    R[b_wire]=$bytes R[b_wire_pk]=$pk
    R[b_wire_ab]=$(wire_bytes 1) R[b_wire_ba]=$(wire_bytes 2)
    R[b_packs_a]=$(($(packs_bytes "$sa") - packs_a)) R[b_packs_r]=$(($(packs_bytes "$sr") - packs_r))
    R[b_commits]=$(($(b_status "$sa" | jq -r '.commits // 0') - commits))
    R[b_drops_a]=$(($(udp_drops "$P_A") - drops_a)) R[b_drops_r]=$(($(udp_drops "$P_R") - drops_r))
    say "  converged in ${R[b_conv]} s, $bytes bytes on the wire"

    R[b_drops_all]="replica $(udp_drops "$P_R"), A $(udp_drops "$P_A")"
    R[b_log]="A: $(b_log_summary "$sa/backer.log"); replica: $(b_log_summary "$W/b-replica.log")"
    b_unmount "$sa" "$ma"
    stop_pid "$pr"

    say "backer: checking the replica (export)"
    "$BACKER" --store "$sr" export "$W/b-export" >/dev/null
    cmp -s "$W/b-export/big.bin" "$W/big-patched.bin" || die "backer: the replica's big.bin differs"
    rm "$W/b-export/big.bin"
    diff -r -q --no-dereference "$TREE" "$W/b-export" >&2 || die "backer: the replica's tree differs from the source"
    rm -rf "$W/b-export"
    R[b_store_a]=$(du -sm "$sa" | cut -f1)
    R[b_store_r]=$(du -sm "$sr" | cut -f1)
    cp "$sa/backer.log" "$W/b-a.log"
    rm -rf "$sa" "$sr" "$ma"
}

# ------------------------------------------------------------------ Syncthing

ST_KEY="bench-$RANDOM$RANDOM$RANDOM"
declare -A ST_ID=() ST_GUI=() ST_PID=() ST_INNER=()
ST_PHASE=""

st_generate() { # st_generate N: home $W/st-N, sets ST_ID[N]
    local h=$W/st-home-$1
    rm -rf "$h"
    syncthing generate --home "$h" --no-default-folder >/dev/null 2>&1 || die "syncthing generate failed"
    ST_ID[$1]=$(syncthing serve --home "$h" --device-id 2>/dev/null | tail -1)
    [[ ${ST_ID[$1]} =~ ^[A-Z0-9-]{20,}$ ]] || die "cannot read Syncthing's device id"
}
st_config() { # st_config N LISTEN GUI DIR: write the whole config.xml
    local n=$1 other=$((3 - $1)) h=$W/st-home-$1 other_port
    other_port=$([[ $other == 1 ]] && echo "$P_S1" || echo "$P_S2")
    ST_GUI[$n]=$3
    mkdir -p "$4/.stfolder"
    cat >"$h/config.xml" <<EOF
<configuration version="36">
    <folder id="bench" label="bench" path="$4" type="sendreceive" rescanIntervalS="3600" fsWatcherEnabled="true" fsWatcherDelayS="$ST_DELAY" ignorePerms="false" autoNormalize="true">
        <filesystemType>basic</filesystemType>
        <device id="${ST_ID[1]}" introducedBy=""></device>
        <device id="${ST_ID[2]}" introducedBy=""></device>
        <minDiskFree unit="%">1</minDiskFree>
    </folder>
    <device id="${ST_ID[$n]}" name="st$n" compression="metadata" introducer="false">
        <address>dynamic</address>
    </device>
    <device id="${ST_ID[$other]}" name="st$other" compression="metadata" introducer="false">
        <address>tcp://127.0.0.1:$other_port</address>
    </device>
    <gui enabled="true" tls="false" debugging="false">
        <address>127.0.0.1:$3</address>
        <apikey>$ST_KEY</apikey>
    </gui>
$(st_options_xml "$2")
</configuration>
EOF
}
st_start() { # st_start N
    local n=$1
    STNOUPGRADE=1 syncthing serve --home "$W/st-home-$n" --no-browser --no-restart --no-upgrade \
        --logfile="$W/st-$ST_PHASE-$n.log" >/dev/null 2>&1 &
    ST_PID[$n]=$!
    PIDS+=("${ST_PID[$n]}")
    wait_for 60 0.05 "Syncthing $n to answer" st_alive "$n"
    # `serve` runs a small monitor process that starts the real one as its
    # child (also with --no-restart): memory is measured on the child.
    ST_INNER[$n]=$(pgrep -P "${ST_PID[$n]}" | head -1 || true)
    [[ -n ${ST_INNER[$n]} ]] || ST_INNER[$n]=${ST_PID[$n]}
}
st_alive() { st_get "$1" /rest/system/ping >/dev/null; }
st_stop() { stop_pid "${ST_PID[$1]}"; }
st_get() { curl -sf -m 10 -H "X-API-Key: $ST_KEY" "http://127.0.0.1:${ST_GUI[$1]}$2"; }
st_connected() { [[ $(st_get "$1" /rest/system/connections | jq -r --arg d "${ST_ID[$((3 - $1))]}" '.connections[$d].connected') == true ]]; }
st_status() { st_get "$1" "/rest/db/status?folder=bench"; }
st_scanned() { # st_scanned N: idle and holding the whole tree (TREE counts + the big file if $2)
    st_status "$1" | jq -e --argjson f "$TREE_FILES" --argjson d "$TREE_DIRS" \
        '.state == "idle" and .localFiles == $f and .localDirectories == $d' >/dev/null
}
st_in_sync() { # st_in_sync: instance 2 idle, needs nothing, holds what 1 holds
    local s1 s2
    s1=$(st_status 1) && s2=$(st_status 2) || return 1
    jq -en --argjson a "$s1" --argjson b "$s2" \
        '$b.state == "idle" and $b.needTotalItems == 0 and $b.globalFiles == $a.localFiles
         and $b.localFiles == $a.localFiles and $b.localDirectories == $a.localDirectories
         and $b.localBytes == $a.localBytes' >/dev/null
}
st_version() { st_get "$1" "/rest/db/file?folder=bench&file=$2" | jq -ce '.local.version'; }
st_same_version() { # st_same_version FILE [NOT]: 2 has 1's version of FILE (and it is not NOT)
    local a b
    a=$(st_version 1 "$1") && b=$(st_version 2 "$1") || return 1
    [[ $a == "$b" && $a != "${2:-}" ]] && st_status 2 | jq -e '.state == "idle" and .needTotalItems == 0' >/dev/null
}
st_wait_connected() { wait_for 120 0.05 "the Syncthing instances to connect" st_connected 1; }

bench_st_latency() {
    say "Syncthing: latency, $WRITES writes (watcher delay $ST_DELAY s)"
    local d1=$W/st-lat-1 d2=$W/st-lat-2
    ST_PHASE=lat
    st_generate 1
    st_generate 2
    st_config 1 "$P_S1" "$P_G1" "$d1"
    st_config 2 "$P_S2" "$P_G2" "$d2"
    st_start 1
    st_start 2
    st_wait_connected
    local limit=$((ST_DELAY * 6 + 60))
    python3 -c "$LATENCY_PY" "$d1/latency.txt" "$d2/latency.txt" "$WRITES" "$W/lat-st" "$limit" ||
        die "Syncthing latency run failed (logs: $W/st-lat-1.log $W/st-lat-2.log)"
    R[s_lat_p50]=$(pct "$W/lat-st" 50)
    R[s_lat_p99]=$(pct "$W/lat-st" 99)
    st_stop 1
    st_stop 2
    rm -rf "$d1" "$d2" "$W/st-home-1" "$W/st-home-2"
}

bench_st_bulk() {
    local d1=$W/st-1 d2=$W/st-2 t0 v bytes pk
    ST_PHASE=bulk
    say "Syncthing: bulk sync of the tree (watcher delay $ST_DELAY s)"
    st_generate 1
    st_generate 2
    st_config 1 "$P_S1" "$P_G1" "$d1"
    st_config 2 "$P_S2" "$P_G2" "$d2"
    cp -a "$TREE/." "$d1/"
    st_start 1
    wait_for "$TIMEOUT" 0.1 "Syncthing 1 to scan the tree" st_scanned 1
    reset_hwm "${ST_INNER[1]}"
    reset_hwm "${ST_PID[1]}"
    R[s_rss_10]=$(rss_kb "${ST_INNER[1]}")
    t0=$EPOCHREALTIME
    st_start 2
    wait_for "$TIMEOUT" 0.05 "Syncthing 2 to be in sync" st_in_sync
    R[s_bulk]=$(elapsed "$t0" "$T_HIT")
    R[s_rss_1]=$(hwm_kb "${ST_INNER[1]}")
    R[s_rss_2]=$(hwm_kb "${ST_INNER[2]}")
    R[s_rss_mon]="$(hwm_kb "${ST_PID[1]}") kB, $(hwm_kb "${ST_PID[2]}") kB"
    say "  ${R[s_bulk]} s"

    say "Syncthing: the $BIG_MB MiB file"
    # written beside the folder and renamed in, so that the watcher cannot
    # catch it half-written (which would send it twice)
    put_big "$W/st-big.bin"
    wire_zero
    t0=$EPOCHREALTIME
    mv "$W/st-big.bin" "$d1/big.bin"
    wait_for "$TIMEOUT" 0.05 "Syncthing 2 to get the big file" st_same_version big.bin
    R[s_big]=$(elapsed "$t0" "$T_HIT")
    sleep 1
    read -r bytes pk < <(wire_bytes 3 4 5 6)
    R[s_big_wire]=$bytes R[s_big_pk]=$pk
    sleep 1

    say "Syncthing: 1 MiB overwrite"
    v=$(st_version 1 big.bin)
    wire_zero
    patch_big "$d1/big.bin"
    t0=$EPOCHREALTIME
    wait_for "$TIMEOUT" 0.02 "Syncthing 2 to get the overwrite" st_same_version big.bin "$v"
    R[s_conv]=$(elapsed "$t0" "$T_HIT")
    sleep 1
    read -r bytes pk < <(wire_bytes 3 4 5 6)
    R[s_wire]=$bytes R[s_wire_pk]=$pk
    R[s_wire_12]=$(wire_bytes 3 4) R[s_wire_21]=$(wire_bytes 5 6)
    say "  converged in ${R[s_conv]} s, $bytes bytes on the wire"

    st_stop 1
    st_stop 2
    cmp -s "$d2/big.bin" "$W/big-patched.bin" || die "Syncthing: the second instance's big.bin differs"
    rm "$d2/big.bin"
    diff -r -q --no-dereference -x .stfolder "$TREE" "$d2" >&2 || die "Syncthing: the second folder differs from the source"
    rm -rf "$d1" "$d2"
}

# ------------------------------------------------------------------ rsync

rsync_stat() { awk -v k="$2" 'index($0, k ": ") == 1 { v = substr($0, length(k) + 3); gsub(/,/, "", v); sub(/[^0-9].*/, "", v); print v }' "$1"; }

bench_rsync() {
    local dst=$W/rsync-dst t0 t1 t2 src=$W/rsync-big-src bdst=$W/rsync-big-dst
    say "rsync: the tree into an empty folder"
    sync -f "$W"
    t0=$EPOCHREALTIME
    rsync -a --stats "$TREE/" "$dst/" >"$W/rsync-bulk.stats"
    t1=$EPOCHREALTIME
    sync -f "$dst"
    t2=$EPOCHREALTIME
    R[r_bulk_nosync]=$(elapsed "$t0" "$t1")
    R[r_bulk]=$(elapsed "$t0" "$t2")
    rm -rf "$dst"

    say "rsync: 1 MiB overwrite (--no-W)"
    mkdir -p "$src" "$bdst"
    put_big "$src/big.bin"
    rsync -a "$src/big.bin" "$bdst/big.bin"
    sync -f "$W"
    patch_big "$src/big.bin"
    t0=$EPOCHREALTIME
    # -I: never skip on equal size and mtime (the patch may land in the same second)
    rsync -a -I --no-W --stats "$src/big.bin" "$bdst/big.bin" >"$W/rsync-delta.stats"
    t1=$EPOCHREALTIME
    R[r_conv]=$(elapsed "$t0" "$t1")
    R[r_literal]=$(rsync_stat "$W/rsync-delta.stats" "Literal data")
    R[r_matched]=$(rsync_stat "$W/rsync-delta.stats" "Matched data")
    R[r_sent]=$(rsync_stat "$W/rsync-delta.stats" "Total bytes sent")
    R[r_recv]=$(rsync_stat "$W/rsync-delta.stats" "Total bytes received")
    cmp -s "$bdst/big.bin" "$W/big-patched.bin" || die "rsync: the copy differs (?)"
    rm -rf "$src" "$bdst"
}

# ------------------------------------------------------------------ run

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
T_START=$EPOCHREALTIME
only() { [[ -z ${BENCH_ONLY:-} || " ${BENCH_ONLY//,/ } " == *" $1 "* ]]; }
if only backer; then bench_backer_latency; fi
if only syncthing; then bench_st_latency; fi
if only rsync; then bench_rsync; fi
if only backer; then bench_backer_bulk; fi
if only syncthing; then bench_st_bulk; fi
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
WALL=$(elapsed "$T_START" "$EPOCHREALTIME")

# ------------------------------------------------------------------ report

num() { [[ $1 =~ ^[0-9]+(\.[0-9]*)?$ ]]; }
ms() { num "$1" && awk -v s="$1" 'BEGIN { printf "%.1f ms", s * 1000 }' || echo -; }
sec() { num "$1" && awk -v s="$1" 'BEGIN { if (s < 1) printf "%.3f s", s; else printf "%.2f s", s }' || echo -; }
mib() { [[ $1 =~ ^[0-9]+$ ]] && awk -v b="$1" 'BEGIN { printf "%.2f MiB", b / 1048576 }' || echo -; }
rss() { [[ $1 =~ ^[0-9]+$ ]] && awk -v k="$1" 'BEGIN { printf "%.1f MiB", k / 1024 }' || echo -; }
ratio() { [[ $1 =~ ^[0-9.]+$ && $2 =~ ^[0-9.]+$ ]] && awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }' || echo -; }
met() { num "$1" && num "$2" && awk -v v="$1" -v l="$2" -v c="$3" 'BEGIN { print ((c == "lt") ? v < l : v <= l) ? "yes" : "NO" }' || echo -; }

b_wire_ratio=$(ratio "${R[b_wire]}" "$CHANGED")
FMT='%-28s %10s %10s %10s %13s %16s   %-32s %s\n'
rows=()
# shellcheck disable=SC2059
row() { rows+=("$(printf "$FMT" "$@")"); }
row "save-to-peer latency p50" "$(ms "${R[b_lat_p50]}")" "-" "$(ms "${R[s_lat_p50]}")" "-" "$(ratio "${R[b_lat_p50]}" "${R[s_lat_p50]}")" \
    "backer p50 < 100 ms" "$(met "${R[b_lat_p50]}" 0.1 lt)"
row "save-to-peer latency p99" "$(ms "${R[b_lat_p99]}")" "-" "$(ms "${R[s_lat_p99]}")" "-" "$(ratio "${R[b_lat_p99]}" "${R[s_lat_p99]}")" "(none)" ""
row "initial sync of the tree" "$(sec "${R[b_bulk]}")" "$(sec "${R[r_bulk]}")" "$(sec "${R[s_bulk]}")" \
    "$(ratio "${R[b_bulk]}" "${R[r_bulk]}")" "$(ratio "${R[b_bulk]}" "${R[s_bulk]}")" \
    "backer <= 1.5x rsync" "$(met "$(ratio "${R[b_bulk]}" "${R[r_bulk]}" | tr -d x)" 1.5 le)"
if [[ -n $CHAIN ]]; then
    row "1 MiB overwrite: bytes sent" "$(mib "${R[b_wire]}")" "$(mib "${R[r_literal]}")" "$(mib "${R[s_wire]}")" \
        "$(ratio "${R[b_wire]}" "${R[r_literal]}")" "$(ratio "${R[b_wire]}" "${R[s_wire]}")" \
        "backer <= 1.3x changed ($b_wire_ratio)" "$(met "${b_wire_ratio%x}" 1.3 le)"
else
    row "1 MiB overwrite: bytes sent" "-" "$(mib "${R[r_literal]}")" "-" "-" "-" "backer <= 1.3x changed" "n/a"
fi
row "1 MiB overwrite: converged" "$(sec "${R[b_conv]}")" "$(sec "${R[r_conv]}")" "$(sec "${R[s_conv]}")" \
    "$(ratio "${R[b_conv]}" "${R[r_conv]}")" "$(ratio "${R[b_conv]}" "${R[s_conv]}")" \
    "backer < 0.5 s" "$(met "${R[b_conv]}" 0.5 lt)"
row "peak RSS, sender (A / S1)" "$(rss "${R[b_rss_a]}")" "-" "$(rss "${R[s_rss_1]}")" "-" "$(ratio "${R[b_rss_a]}" "${R[s_rss_1]}")" \
    "backer < Syncthing" "$(met "${R[b_rss_a]}" "${R[s_rss_1]}" lt)"
row "peak RSS, receiver (B / S2)" "$(rss "${R[b_rss_r]}")" "-" "$(rss "${R[s_rss_2]}")" "-" "$(ratio "${R[b_rss_r]}" "${R[s_rss_2]}")" \
    "backer < Syncthing" "$(met "${R[b_rss_r]}" "${R[s_rss_2]}" lt)"

cmdline="bench/sync.sh"
for v in BENCH_TREE BENCH_TREE_MB BENCH_BIG_MB BENCH_WRITES BENCH_ST_DELAY BENCH_PORT BENCH_TMPDIR; do
    if [[ -n ${!v:-} ]]; then cmdline="$v=${!v} $cmdline"; fi
done
rev=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo '?')
if [[ -n $(git -C "$REPO" status --porcelain --untracked-files=no 2>/dev/null) ]]; then rev+=" (with uncommitted changes)"; fi

echo
echo "backer sync benchmark: $(date -u '+%Y-%m-%d %H:%M UTC'), backer $rev; $(syncthing --version | cut -d' ' -f1-2); $(rsync --version | head -1 | awk '{ print $1, $3 }')"
echo "command: $cmdline   (took $(awk -v s="$WALL" 'BEGIN { printf "%.0f", s }') s)"
echo "machine: $(nproc) CPUs, kernel $(uname -r), disk: $(df -PT "$W" | awk 'NR == 2 { print $1 " (" $2 ")" }') under $TMPROOT"
echo "load average: $LOAD_START at start, $LOAD_END at end"
if awk -v a="${LOAD_START%% *}" -v b="${LOAD_END%% *}" -v n="$(nproc)" 'BEGIN { exit !(a > n / 2 || b > n / 2) }'; then
    echo "NOTE: the load average was above half the CPUs: other work adds noise to the times"
fi
echo "tree: $TREE_FILES files, $TREE_DIRS folders, $TREE_LINKS symlinks, $TREE_MIB MiB ($TREE_DESC)"
echo "overwrite: 1 MiB at offset $PATCH_AT MiB of a $BIG_MB MiB file; Syncthing fsWatcherDelayS=$ST_DELAY"
[[ -z $WIRE_NOTE ]] || echo "NOTE: $WIRE_NOTE"
echo
# shellcheck disable=SC2059
printf "$FMT" metric backer rsync syncthing backer/rsync backer/syncthing goal met
printf '%s\n' "${rows[@]}"
echo
echo "rows: latency = close of a small write on A until B reads the new content (polled"
echo "      every 2 ms), nearest-rank over $WRITES writes; initial sync = replica start (backer) /"
echo "      second instance start (Syncthing) / rsync -a + sync -f, until the copy is whole;"
echo "      bytes sent = IP bytes between the two nodes, both ways (iptables on lo) for backer"
echo "      and Syncthing, rsync's 'Literal data' for rsync; converged = end of the write until"
echo "      the peer holds the new version (rsync: the whole --no-W run); peak RSS = VmHWM"
echo "      during the bulk sync (sender reset at its start)."
echo
echo "raw:"
for f in backer st; do
    [[ -s $W/lat-$f ]] && echo "  latency seconds, sorted: ${f/st/syncthing}: $(sort -g "$W/lat-$f" | awk '{ printf "%.4f ", $1 }')"
done
if only rsync; then
    echo "  rsync bulk: ${R[r_bulk_nosync]} s without the sync -f, ${R[r_bulk]} s with it"
    echo "  rsync --no-W overwrite: literal ${R[r_literal]} B, matched ${R[r_matched]} B, total sent ${R[r_sent]} B, received ${R[r_recv]} B, ${R[r_conv]} s"
fi
if only backer; then
    echo "  backer: bulk ${R[b_bulk]} s; big file new: ${R[b_big]} s, ${R[b_big_wire]} B in ${R[b_big_pk]} packets;" \
        "overwrite: ${R[b_wire]} B in ${R[b_wire_pk]} packets ($b_wire_ratio of the changed bytes;" \
        "A->replica ${R[b_wire_ab]% *} B, replica->A ${R[b_wire_ba]% *} B), ${R[b_conv]} s"
    echo "  backer overwrite: commits on A ${R[b_commits]}; pack files grew by ${R[b_packs_a]} B on A, ${R[b_packs_r]} B on the replica (new chunk bytes); datagrams dropped by the kernel for a full receive buffer: ${R[b_drops_r]} at the replica's socket, ${R[b_drops_a]} at A's (each a GRO batch of QUIC packets that is then resent)"
    echo "  backer: UDP datagrams dropped for a full receive buffer over the whole bulk group (tree, big file, overwrite): ${R[b_drops_all]}"
    echo "  backer: peak RSS A ${R[b_rss_a]} kB (${R[b_rss_a0]} kB resident when the sync started), replica ${R[b_rss_r]} kB; stores after: A ${R[b_store_a]} MiB, replica ${R[b_store_r]} MiB"
    echo "  backer sessions: latency pair: ${R[b_lat_log]}; bulk pair: ${R[b_log]}"
fi
if only syncthing; then
    echo "  syncthing: bulk ${R[s_bulk]} s; big file new: ${R[s_big]} s, ${R[s_big_wire]} B in ${R[s_big_pk]} packets;" \
        "overwrite: ${R[s_wire]} B in ${R[s_wire_pk]} packets ($(ratio "${R[s_wire]}" "$CHANGED") of the changed bytes;" \
        "S1->S2 ${R[s_wire_12]% *} B, S2->S1 ${R[s_wire_21]% *} B), ${R[s_conv]} s"
    echo "  syncthing: peak RSS S1 ${R[s_rss_1]} kB (${R[s_rss_10]} kB resident when the sync started), S2 ${R[s_rss_2]} kB (their monitor processes, not counted: ${R[s_rss_mon]})"
fi
