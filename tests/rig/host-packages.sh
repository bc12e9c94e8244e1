#!/usr/bin/env bash
# The host packages the test rig's real node needs, installed only when missing:
# containerd, runc, the CNI plugins, iptables and conntrack run the node;
# busybox-static and gcc (the static pause program) make its images. Debian names.
set -euo pipefail
packages=(containerd runc containernetworking-plugins iptables conntrack busybox-static libc6-dev)
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
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
