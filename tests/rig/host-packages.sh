#!/usr/bin/env bash
# The host packages the test rig needs, installed only when missing (Debian names):
# containerd, runc, the CNI plugins, iptables and conntrack run the real node;
# busybox-static and gcc (the static pause program) make its images; docker.io
# (a dockerd the tests start themselves) and debootstrap (the Python base) build
# Driftline's images; prometheus scrapes the quick demo's parts to check every query of
# the dashboards and alert rules (and brings promtool).
set -euo pipefail
packages=(containerd runc containernetworking-plugins iptables conntrack busybox-static libc6-dev
          docker.io debootstrap prometheus)
command -v gcc >/dev/null || packages+=(gcc)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$package")
done
((${#missing[@]})) || exit 0
echo "rig: installing host packages: ${missing[*]}"
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
# The tests start their own dockerd and containerd (no bridge, no iptables): keep the
# packages' services from starting with the install.
policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  policy=/usr/sbin/policy-rc.d
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod +x "$policy"
  trap '$sudo rm -f "$policy"' EXIT
fi
$sudo apt-get update -q
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
