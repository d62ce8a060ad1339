#!/usr/bin/env bash
# Duplex set-up: installs what the project needs from Debian, builds the
# static `duplex` binary, installs it as /usr/local/bin/duplex, builds the
# default guest image and probes the accelerator. Idempotent: a re-run only
# does what is missing or changed. Needs root (apt, network namespaces).
set -euo pipefail
cd "$(dirname "$0")"

say() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
    echo "setup.sh needs root (it installs Debian packages and the lab uses network namespaces)" >&2
    exit 1
fi

# Debian packages: QEMU (VMs), busybox-static (guest userland), iproute2 +
# iputils-ping (lab), iputils-arping (the host-loss tests watch who answers
# for a service address), nftables (lab partitions), sip-tester (sipp, SIP load), etcd-server (the
# distributed store backend), protobuf-compiler (protoc: the etcd client's
# gRPC code is generated at build time; libprotobuf-dev has the well-known
# .proto files it imports), qemu-utils (qemu-img: VMs' root disk overlays),
# chromium + chromium-driver (the web console's tests drive a real browser)
# and mmdebstrap (root filesystems of images built from a spec).
PACKAGES=(qemu-system-x86 qemu-utils mmdebstrap busybox-static iproute2 iputils-ping iputils-arping nftables sip-tester etcd-server protobuf-compiler libprotobuf-dev chromium chromium-driver)
missing_packages() {
    missing=()
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
}
missing_packages
if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
    # Installing one package can remove another that conflicts with it (a
    # qemu-utils from backports goes when Debian's qemu-system-x86 comes):
    # install what is missing now, from the same release.
    missing_packages
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing Debian packages removed by the first install: ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
        missing_packages
        [ ${#missing[@]} -eq 0 ] || { echo "error: could not install ${missing[*]}" >&2; exit 1; }
    fi
else
    say "Debian packages present: ${PACKAGES[*]}"
fi
# The image builder downloads the kernel package with apt; make sure apt
# knows it (a fresh machine may have empty package lists).
if ! apt-cache show linux-image-cloud-amd64 >/dev/null 2>&1; then
    say "refreshing apt package lists"
    apt-get update -qq
fi

# QEMU runs as this unprivileged user, never as root (agent --qemu-user).
if ! id -u duplex-qemu >/dev/null 2>&1; then
    say "adding the system user duplex-qemu (QEMU runs as it)"
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin duplex-qemu
fi

# An S3-protocol server for the external disk's test against a real S3
# store (s3s-fs, from crates.io; 0.13 builds with the Rust of this machine).
if ! command -v s3s-fs >/dev/null 2>&1; then
    say "installing s3s-fs (an S3-protocol server) from crates.io"
    cargo install --quiet s3s-fs --version "~0.13" --features binary --root /usr/local
fi

say "building duplex (release, static)"
cargo build --release --locked
BIN="$PWD/target/x86_64-unknown-linux-gnu/release/duplex"
install -m 0755 "$BIN" /usr/local/bin/duplex

say "building the default guest image"
/usr/local/bin/duplex image build

# The cluster's CA for clusters made by hand, and an admin bundle for this
# machine's CLI (labs make their own CA at `lab up`). Never replaced.
if [ ! -e /var/lib/duplex/pki/ca.key ]; then
    say "making the cluster CA in /var/lib/duplex/pki and an admin bundle in /var/lib/duplex/operator"
    /usr/local/bin/duplex pki --dir /var/lib/duplex/pki init
    /usr/local/bin/duplex pki --dir /var/lib/duplex/pki issue operator admin \
        --scope admin --out /var/lib/duplex/operator
fi

say "probing the accelerator (KVM if a probe boot works, else TCG)"
/usr/local/bin/duplex accel

say "ready: run \`duplex demo\`"
