#!/usr/bin/env bash
# Reference tools `make bench` compares kit with (not needed by `make test`):
# age (`age -d`) and ssh-keygen (`ssh-keygen -Y verify`, openssh-client).
# The bench prints a reason in its table for any that is still missing.
set -euo pipefail
need=()
command -v age >/dev/null 2>&1 || need+=(age)
command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ]; then
  echo "benchdeps: missing ${need[*]}; install them as root (apt-get install ${need[*]}) or the bench skips those rows" >&2
  exit 0
fi
echo "benchdeps: installing ${need[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
