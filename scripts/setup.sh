#!/usr/bin/env bash
# Installs everything imgfs needs to build, test and try, from Debian packages. Idempotent:
# installs only what is missing. Needs root (or sudo) when something is missing.
set -euo pipefail

packages=(
  # build
  build-essential cmake ninja-build pkg-config clang libclang-rt-14-dev clang-format
  libfuse3-dev fuse3 libcurl4-openssl-dev nlohmann-json3-dev libssl-dev libzstd-dev zlib1g-dev
  libdeflate-dev libisal-dev
  libseccomp-dev
  libgtest-dev libgmock-dev
  # tests and the demo: a real registry, peer tools as oracles, helpers
  docker-registry umoci skopeo fuse-overlayfs apache2-utils openssl curl python3 zstd
  attr libcap2-bin busybox-static tar gzip util-linux time
  # podman (with runc: crun refuses a cgroup v1/v2 hybrid) runs containers from the Additional
  # Layer Store in tests; newuidmap/newgidmap map the users of `imgfs run` without root
  podman runc uidmap
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -ne 0 ] && sudo_cmd=(sudo)
  export DEBIAN_FRONTEND=noninteractive
  # Debian's docker-registry package starts a system service on :5000; we start our own
  # instances on free loopback ports, so keep the packaged one from starting.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | "${sudo_cmd[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${sudo_cmd[@]}" chmod +x /usr/sbin/policy-rc.d
    remove_policy=1
  fi
  "${sudo_cmd[@]}" apt-get update -q
  "${sudo_cmd[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
  if [ "${remove_policy:-0}" = 1 ]; then "${sudo_cmd[@]}" rm -f /usr/sbin/policy-rc.d; fi
else
  echo "setup: all packages present"
fi

# FUSE needs the device node; in containers it may have to be created.
if [ ! -e /dev/fuse ] && [ "$(id -u)" -eq 0 ]; then
  mknod -m 0666 /dev/fuse c 10 229 || true
fi
