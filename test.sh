#!/usr/bin/env bash
# Duplex tests: unit tests of every crate, bad-input tests of the binary,
# and the end-to-end lab test (real QEMU VMs in network namespaces; needs
# root and ./setup.sh first). Same build profile as setup.sh, so nothing is
# compiled twice.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -f /var/cache/duplex/images/default/initramfs.img ]; then
    echo "no guest image: run ./setup.sh first" >&2
    exit 1
fi
exec cargo test --release --locked --workspace "$@"
