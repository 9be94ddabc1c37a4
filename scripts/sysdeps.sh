#!/usr/bin/env bash
# Install the system tools kit's demo and tests need, if they are missing:
# unshare (util-linux) and ip (iproute2) for the offline namespace, faketime
# (libfaketime) to shift the clock of a real `kit run` in tests, pdftoppm
# (poppler-utils) to render printed QR sheets back to images in tests.
set -euo pipefail
need=()
command -v unshare >/dev/null 2>&1 || need+=(util-linux)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v faketime >/dev/null 2>&1 || need+=(faketime)
command -v pdftoppm >/dev/null 2>&1 || need+=(poppler-utils)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "sysdeps: missing ${need[*]}; install them as root (apt-get install ${need[*]})" >&2
  exit 1
fi
echo "sysdeps: installing ${need[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
