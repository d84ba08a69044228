#!/bin/bash
# sudo bash bench/known_names_memory.sh BINARY [DIRECTORY]: the daemon's
# RSS after each of 3 rounds of 100,000 new files created, after which the
# kernel drops its dentries and inodes (so it forgets them). The image goes
# in a new directory under DIRECTORY (default /tmp; a tmpfs is best).
set -e
bin=$1; d=$(mktemp -d "${2:-/tmp}/vigilfs-names.XXXXXX")
$bin mount $d/i.img $d/m --size 2G --daemon -o cache=16M >/dev/null 2>&1
pid=$(pgrep -f "mount $d/i.img" | head -1)
out="$(basename $bin):"
for round in 0 1 2; do
python3 - "$d/m" $round <<'PY'
import os, sys
m, r = sys.argv[1], sys.argv[2]
for a in range(100):
    os.mkdir(f"{m}/r{r}d{a}")
    for b in range(1000):
        open(f"{m}/r{r}d{a}/file-with-a-longish-name-{b}", "w").close()
PY
echo 2 > /proc/sys/vm/drop_caches; sleep 1
out="$out $(awk '/VmRSS/ {print $2}' /proc/$pid/status)"
done
echo "$out KiB"
umount $d/m; sleep 0.5; rm -rf $d
