#!/usr/bin/env bash
# How long the README's install step takes with pip and with uv, side by side in one run: each
# installs the project with its dev extras into a fresh venv, pip and uv from empty caches (what a
# newcomer's first `make run` does), then uv again from the cache it just filled (a second clone).
# Prints seconds and the ratios.
#
#     bash bench/install_time.sh [SCRATCH]   # SCRATCH: a folder with ~25 GB free (default: a temp dir)
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=${1:-$(mktemp -d)}
mkdir -p "$scratch"
trap 'rm -rf "$scratch"/venv-* "$scratch"/cache-*' EXIT

seconds() { local t0=$SECONDS; "$@" > "$scratch/last.log" 2>&1 || { cat "$scratch/last.log"; exit 1; }; echo $((SECONDS - t0)); }

install_pip() {  # as the Makefile does: pip upgraded first (the venv's own may be old, and its resolver slow)
    python3 -m venv "$1"
    "$1/bin/python" -m pip install -q --no-cache-dir --upgrade pip
    "$1/bin/python" -m pip install -q --no-cache-dir -e '.[dev]'
}
pip_s=$(seconds install_pip "$scratch/venv-pip")
rm -rf "$scratch/venv-pip"

install_uv() {  # $1: venv, $2: uv's cache
    python3 -m venv "$1"
    "$1/bin/python" -m pip install -q --no-cache-dir uv
    UV_CACHE_DIR=$2 "$1/bin/uv" pip install -q --native-tls --python "$1/bin/python" -e '.[dev]'
}
uv_cold_s=$(seconds install_uv "$scratch/venv-uv1" "$scratch/cache-uv")
rm -rf "$scratch/venv-uv1"
uv_warm_s=$(seconds install_uv "$scratch/venv-uv2" "$scratch/cache-uv")

echo "pip, empty cache: ${pip_s} s"
echo "uv, empty cache:  ${uv_cold_s} s ($(python3 -c "print(round($uv_cold_s / $pip_s, 2))")x pip)"
echo "uv, warm cache:   ${uv_warm_s} s ($(python3 -c "print(round($uv_warm_s / $pip_s, 2))")x pip)"
