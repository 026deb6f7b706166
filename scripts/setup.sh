#!/usr/bin/env bash
# Set up what a fresh machine lacks: the Arm toolchain and QEMU (Debian packages) and the
# project's virtual environment. Safe to run again; does nothing that is already done.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"
PYTHON="${PYTHON:-python3}"

need_apt=0
command -v arm-none-eabi-gcc >/dev/null 2>&1 || need_apt=1
command -v qemu-system-arm >/dev/null 2>&1 || need_apt=1
[ -f /usr/lib/arm-none-eabi/newlib/libc.a ] || [ -d /usr/lib/arm-none-eabi/newlib ] || need_apt=1
if [ "$need_apt" = 1 ]; then
  echo "setup: installing $APT_PACKAGES" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; elif command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "setup: error: need root to install $APT_PACKAGES; run: sudo apt-get install -y $APT_PACKAGES" >&2
    exit 1
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "setup: error: apt-get not found; install $APT_PACKAGES with your package manager" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq >&2 || { echo "setup: error: apt-get update failed (no access to the Debian mirror?)" >&2; exit 1; }
  $SUDO apt-get install -y -qq $APT_PACKAGES >&2 || {
    echo "setup: error: could not install $APT_PACKAGES; install them and rerun" >&2; exit 1; }
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv" >&2
  "$PYTHON" -m venv .venv
fi
# torch first and pinned: an unpinned resolution would pull a multi-GB CUDA build.
.venv/bin/python -m pip install -q torch==2.13.0 >&2
.venv/bin/python -m pip install -q -e ".[test,int8,ray]" >&2
touch .venv/.tvmnas-setup
echo "setup: ready" >&2
