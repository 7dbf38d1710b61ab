# Helpers shared by the bench scripts (sourced, not run). The sourcing
# script sets BENCH_NAME (for messages) before sourcing this file.

say() { printf '%s\n' "$*" >&2; }
die() { say "$BENCH_NAME: $*"; exit 1; }

# positive_ints VAR...: each variable holds a positive integer, or die.
positive_ints() {
    local v
    for v in "$@"; do
        [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
    done
}

# need_cmds CMD...: each command is on PATH, or die.
need_cmds() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null || die "needs '$c' on PATH"
    done
}

is_mounted() { awk -v m="$1" '$2 == m { f = 1 } END { exit !f }' /proc/self/mounts; }
alive() { kill -0 "$1" 2>/dev/null; }

wait_gone() { # wait_gone PID SECONDS: wait for a process to exit
    local pid=$1 n=$(($2 * 20))
    while alive "$pid" && ((n-- > 0)); do sleep 0.05; done
    ! alive "$pid"
}

unmount() { # unmount $1 if mounted, lazily if it is busy
    local m=$1
    is_mounted "$m" || return 0
    fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
}

# finish_cleanup RC DIR...: warn about mounts in MOUNTS that are still up,
# remove the work folders (never crossing into a mount that would not go
# away), and exit with RC.
finish_cleanup() {
    local rc=$1 m d
    shift
    for m in "${MOUNTS[@]}"; do
        is_mounted "$m" && say "warning: $m is still mounted; leaving it and its parent folder"
    done
    for d in "$@"; do
        [[ -n $d && -d $d ]] || continue
        rm -rf --one-file-system "$d" 2>/dev/null || say "warning: could not remove all of $d"
    done
    if ((rc != 0)); then say "$BENCH_NAME: failed (exit $rc); cleaned up"; fi
    exit "$rc"
}

# backer_binary: sets BACKER to $BACKER_BIN, else to a release build made
# now (needs REPO).
backer_binary() {
    if [[ -n ${BACKER_BIN:-} ]]; then
        BACKER=$BACKER_BIN
    else
        say "building backer: cargo build --release -p backer"
        (cd "$REPO" && cargo build --release -p backer) >&2
        BACKER=${CARGO_TARGET_DIR:-$REPO/target}/release/backer
    fi
    [[ -x $BACKER ]] || die "no backer binary at $BACKER"
}

# st_options_xml PORT: the <options> of a benchmark's Syncthing config:
# listening on 127.0.0.1:PORT, and nothing that reaches off the machine
# (no announcements, relays, NAT, upgrades or reports).
st_options_xml() {
    cat <<XML
    <options>
        <listenAddress>tcp://127.0.0.1:$1</listenAddress>
        <globalAnnounceEnabled>false</globalAnnounceEnabled>
        <localAnnounceEnabled>false</localAnnounceEnabled>
        <relaysEnabled>false</relaysEnabled>
        <natEnabled>false</natEnabled>
        <startBrowser>false</startBrowser>
        <urAccepted>-1</urAccepted>
        <autoUpgradeIntervalH>0</autoUpgradeIntervalH>
        <crashReportingEnabled>false</crashReportingEnabled>
        <setLowPriority>false</setLowPriority>
    </options>
XML
}
