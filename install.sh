#!/usr/bin/env bash
# Installs backer on a Debian machine and sets up this node.
#
# What it does: installs the build and run-time packages, Rust if cargo is
# missing, builds backer, puts it in /usr/local/bin (and the mount(8)
# helper in /sbin), creates this node's store (or, if there is one, shows
# its id), listens on UDP 22000 when that port is free, and mounts the
# folder ($BACKER_DIR, else ~/Backer) in the background.
#
# Safe to run again: it installs only what is missing and never replaces an
# existing store. Run it as root, or as a user who may use sudo (the store
# then belongs to that user).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

say() { printf '==> %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
else
    command -v sudo >/dev/null || die "run me as root, or install sudo"
    SUDO=(sudo)
fi

# 1. Debian packages (fuse3 brings fusermount3, which mounts will need).
# fuse3 for the mount; git and sqlite3 are programs the test suite runs in a
# mount, iproute2 makes the network namespaces of its two-host test,
# chromium and chromium-driver run the web page's headless-browser test.
packages=(build-essential pkg-config fuse3 curl git sqlite3 iproute2 chromium chromium-driver)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
        missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    say "Installing ${missing[*]}"
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi

# 2. Rust: rustup's stable toolchain, only if there is no cargo at all.
if ! command -v cargo >/dev/null && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck source=/dev/null
    . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null; then
    say "Installing Rust (rustup, stable toolchain) in $HOME/.cargo"
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs |
        sh -s -- -y --profile minimal --default-toolchain stable
    # shellcheck source=/dev/null
    . "$HOME/.cargo/env"
fi
need=1.85
have=$(rustc --version | awk '{print $2}')
if [ "$(printf '%s\n' "$need" "$have" | sort -V | head -n1)" != "$need" ]; then
    die "backer needs Rust $need or newer, found $have ($(command -v rustc)); try 'rustup update stable'"
fi

# fsx, the file-system exerciser the test suite runs in a mount.
if ! command -v fsx >/dev/null && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/fsx" ]; then
    say "Installing fsx (for the test suite)"
    cargo install fsx --version 0.3.2 --locked --quiet
fi

# 3. Build and install the binary.
say "Building backer (release)"
cargo build --release -p backer
"${SUDO[@]}" install -m 0755 target/release/backer /usr/local/bin/backer
# mount(8) runs /sbin/mount.backer for `mount -t backer` and fstab lines.
"${SUDO[@]}" ln -sf /usr/local/bin/backer /sbin/mount.backer
say "Installed /usr/local/bin/backer and /sbin/mount.backer"

# 4. This node's store: where backer looks by default ($BACKER_STORE, else
#    $XDG_DATA_HOME/backer, else ~/.local/share/backer).
data_home=${XDG_DATA_HOME:-}
case "$data_home" in
    /*) ;;
    *) data_home="$HOME/.local/share" ;;
esac
store=${BACKER_STORE:-$data_home/backer}
backer=/usr/local/bin/backer
if out=$("$backer" --store "$store" id 2>&1); then
    say "A store already exists; this node's id:"
    printf '%s\n' "$out" | tail -n1
elif grep -q 'no store at' <<<"$out"; then
    say "Creating this node's store"
    "$backer" --store "$store" init
else
    printf '%s\n' "$out" >&2
    exit 1
fi
say "The store is at $store"

# 5. Listen for this person's other machines on UDP 22000 (as Syncthing
#    does), unless a config exists already or the port is taken.
port=${BACKER_PORT:-22000}
if [ ! -e "$store/config.toml" ]; then
    if ss -Hlun "sport = :$port" 2>/dev/null | grep -q .; then
        say "UDP port $port is in use: not listening (set 'listen' in $store/config.toml)"
    else
        printf 'listen = "0.0.0.0:%s"\n' "$port" >"$store/config.toml"
    fi
fi

# 6. The main job: mount the folder (in the background; it survives this
#    shell). Default folder: $BACKER_DIR, else ~/Backer.
folder=${BACKER_DIR:-$HOME/Backer}
mkdir -p "$folder"
if "$backer" --store "$store" status --json 2>/dev/null | grep -q '"mount":"'; then
    say "backer is already running: $("$backer" --store "$store" status | grep running)"
else
    "$backer" --store "$store" mount "$folder"
fi
say "Your backer folder is $folder (logs: $store/backer.log; stop: fusermount3 -u $folder)"
say "To mirror with another machine: on each, 'backer peer add <the other's id> [<its address>:$port]'"
say "This node's id: $("$backer" --store "$store" id | tail -n1)"
