#!/usr/bin/env bash
# Set up dfmon on a fresh Debian/Ubuntu machine: system packages, then a virtualenv in .venv.
# espeak-ng speaks the synthetic example calls; chromium runs the browser tests; redis-server
# carries events between workers (dfmon serve --bus, gateway, sinks) and its tests.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(espeak-ng libespeak-ng1 chromium redis-server)
missing=()
for pkg in "${apt_packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip >/dev/null
.venv/bin/pip install -q -e '.[dev]'
echo "dfmon installed in .venv: $(.venv/bin/dfmon --version)"
