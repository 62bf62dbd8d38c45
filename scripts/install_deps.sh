#!/usr/bin/env bash
# Installs everything kvmem's build, tests and benchmarks need on Debian 12, from Debian's
# own archive only. A no-op (no apt-get call at all) when every package is already present.
set -euo pipefail

packages=(
  build-essential cmake ninja-build git
  googletest libgtest-dev libgmock-dev libbenchmark-dev
  clang libclang-rt-14-dev            # libFuzzer targets (the fuzz preset)
  libjemalloc-dev libmimalloc-dev libgoogle-perftools-dev   # peer allocators, benchmarks only
  libnuma-dev                          # optional NUMA binding in KVBuffer
  python3 python3-dev pybind11-dev python3-pytest python3-numpy python3-matplotlib
  python3-setuptools python3-wheel python3-pip python3-venv
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

echo "install_deps: installing ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
