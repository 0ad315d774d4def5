#!/usr/bin/env bash
# An emulated aarch64 device for `validate --on` (issue 14): Debian's qemu-user-static through binfmt_misc, an arm64
# Debian userland (debootstrap) at $ROOT with a torch-free scnet-deploy environment in /opt/device, built from this
# checkout. Idempotent: the userland is made once; the scnet-deploy wheel is reinstalled every run (same version,
# newer code). Needs root and Debian's package mirror; the aarch64 wheels come from the package index.
#
# ONNX Runtime is pinned to 1.24.1 here, the project's floor: its 1.32 aarch64 wheel dies with SIGSEGV when a session
# is created under bookworm's qemu 7.2 user emulation (any QEMU_CPU); 1.24.1 runs (checked 2026-12-04).
set -euo pipefail
ROOT="${1:-/srv/scnet-deploy-arm64}"
REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"  # the test passes its own (the project's environment: setuptools >= 69 and wheel)
ORT="onnxruntime==1.24.1"
NCNN="ncnn==1.0.20250503"  # the newest ncnn with an aarch64 wheel for CPython 3.11 on the package index

if [ ! -x /usr/bin/qemu-aarch64-static ] || ! command -v debootstrap >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static debootstrap binfmt-support >/dev/null
fi
mountpoint -q /proc/sys/fs/binfmt_misc || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
[ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64

# The Debian mirror this machine's apt uses (sources.list.d deb822 or a classic sources.list), not the security one
MIRROR="${DEBIAN_MIRROR:-$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
    | grep -E '^(URIs:|deb )' | grep -v -- '-security' | grep -oE 'https?://[^ ]+' | head -n 1 || true)}"
if [ ! -x "$ROOT/usr/bin/python3" ]; then
    [ -n "$MIRROR" ] || { echo "no Debian mirror in this machine's apt configuration; set DEBIAN_MIRROR" >&2; exit 1; }
    debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$ROOT" \
        "$MIRROR" >/dev/null
fi
for fs in proc sys; do mountpoint -q "$ROOT/$fs" || mount --bind "/$fs" "$ROOT/$fs"; done

WHEELS="$ROOT/wheels"
mkdir -p "$WHEELS"
if ! ls "$WHEELS"/onnxruntime-1.24.1-*.whl "$WHEELS"/ncnn-1.0.20250503-*.whl "$WHEELS"/onnx-*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip download -q --only-binary=:all: --python-version 3.11 --implementation cp --abi cp311 \
        --platform manylinux2014_aarch64 --platform manylinux_2_27_aarch64 --platform manylinux_2_28_aarch64 \
        -d "$WHEELS" numpy pillow "$ORT" "$NCNN" onnx typer rich matplotlib pypng
fi
rm -f "$WHEELS"/scnet_deploy-*.whl
"$PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w "$WHEELS" "$REPO" >/dev/null 2>&1
chroot "$ROOT" /bin/sh -c "[ -x /opt/device/bin/python ] || python3 -m venv /opt/device"
chroot "$ROOT" /bin/sh -c "PIP_CONFIG_FILE=/dev/null /opt/device/bin/pip install -q --no-index --find-links /wheels \
    '$ORT' '$NCNN' scnet-deploy && PIP_CONFIG_FILE=/dev/null /opt/device/bin/pip install -q --no-index --no-deps \
    --force-reinstall /wheels/scnet_deploy-*.whl" 2>&1 | grep -v "Location '/opt" || true
chroot "$ROOT" /opt/device/bin/python -c "import platform, torch" 2>/dev/null && { echo "torch on the device"; exit 1; }
chroot "$ROOT" /opt/device/bin/python -c "import platform; assert platform.machine() == 'aarch64'"
echo "$ROOT"
