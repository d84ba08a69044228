# Shared by the mount benchmarks (mount.sh, parallel_fsync.sh,
# namespace_scale.sh): a work directory with a tmpfs every image lives on
# (TMPFS_SIZE, default 6G), removed on exit; and for the single-purpose
# ones, systems mounted on a fresh image and mount point each time (an
# older vigilfs may still be closing the previous image when umount has
# returned). Source it after `set -euo pipefail`; it builds the release
# binary and sets $vigilfs, $work and the functions below (mount.sh
# defines its own mount_system for its four systems).
#
# IMAGE_DIR=DIR puts the images in a fresh directory under DIR instead
# (say on a real disk, where a device flush costs what it does there).
#
# SYSTEMS picks the systems (vigilfs, ext4-loop, and vigilfs:OPTIONS for
# vigilfs mounted with `-o OPTIONS`); BASELINE=PATH adds vigilfs-before,
# served by an earlier vigilfs binary.

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$here"
cargo build --release -p vigilfs-cli 2>/dev/null
vigilfs="$here/target/release/vigilfs"

work=$(mktemp -d "/tmp/vigilfs-$(basename "$0" .sh).XXXXXX")
cleanup() {
    for mountpoint in "$work"/mnt/*; do
        umount "$mountpoint" 2>/dev/null || umount -l "$mountpoint" 2>/dev/null || true
    done
    if [ -n "${IMAGE_DIR:-}" ]; then
        rm -rf "$images"
    else
        for _ in $(seq 1 100); do
            umount "$work/tmpfs" 2>/dev/null && break
            sleep 0.1
        done
    fi
    rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/mnt"
if [ -n "${IMAGE_DIR:-}" ]; then
    images=$(mktemp -d "$IMAGE_DIR/vigilfs-bench.XXXXXX")
    ln -s "$images" "$work/tmpfs"
else
    mkdir -p "$work/tmpfs"
    mount -t tmpfs -o size="${TMPFS_SIZE:-6G}" tmpfs "$work/tmpfs"
fi

read -r -a systems <<< "${SYSTEMS:-vigilfs ext4-loop}"
if [ -n "${BASELINE:-}" ]; then systems=(vigilfs-before "${systems[@]}"); fi

mounted=0
mount_system() { # system → mount point; call as $(mount_system S), then
    # bump $mounted in the caller (the subshell's count is lost)
    local system=$1 name=${1//[^a-zA-Z0-9-]/_}
    local mountpoint="$work/mnt/$name-$mounted" image="$work/tmpfs/$name-$mounted.img"
    mkdir -p "$mountpoint"
    # The daemon must not hold the caller's stdout: this runs in $(...).
    case $system in
        vigilfs) "$vigilfs" mount "$image" "$mountpoint" --size 2G --daemon >&2 ;;
        vigilfs-before) "$BASELINE" mount "$image" "$mountpoint" --size 2G --daemon >&2 ;;
        vigilfs:*)
            "$vigilfs" mount "$image" "$mountpoint" --size 2G -o "${system#vigilfs:}" \
                --daemon >&2 ;;
        ext4-loop)
            truncate -s 2G "$image"
            mkfs.ext4 -q -F "$image" >&2
            mount -o loop "$image" "$mountpoint" ;;
        *) echo "unknown system $system" >&2; exit 2 ;;
    esac
    mountpoint -q "$mountpoint" || { echo "mounting $system failed" >&2; exit 1; }
    echo "$mountpoint"
}

unmount_system() { # mount point
    umount "$1"
    for _ in $(seq 1 100); do
        mountpoint -q "$1" || break
        sleep 0.1
    done
    rm -f "$work/tmpfs/"*.img  # a daemon still closing one keeps it until then
}
