#!/usr/bin/env bash
# kit end to end on one machine: the operator (online signer), the offline host
# and the auditor, with a temporary folder standing for the USB stick.
#
#   make demo            (or: PATH=.venv/bin:$PATH bash demo/demo.sh)
#   KEEP=1 make demo     keeps the work folder and prints where it is
#
# The host side runs inside a network namespace with only loopback (unshare -n,
# needs root); the job it starts calls a local HTTP API with the token kit
# released to it. Exits non-zero as soon as a step does not give the expected
# result. The API token lives in a shell variable of this script only: never
# in argv, never in a file in clear (the API server gets its SHA-256).
set -uo pipefail

DEMO_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$DEMO_DIR/.." && pwd)
SELF="$DEMO_DIR/demo.sh"

# -- output helpers -------------------------------------------------------------

step() { printf '\n== %s ==\n' "$*"; }
say() { printf '   %s\n' "$*"; }
ok() { printf '   ok: %s\n' "$*"; }
die() {
  printf '\nDEMO FAILED: %s\n' "$*" >&2
  exit 1
}
show() { # print a command line as typed, the work folder abbreviated to $W
  local text="$*"
  printf '   $ %s\n' "${text//"$W"/\$W}"
}
showcmd() { # print an argv, quoting the words that need it
  local out="" a
  for a in "$@"; do
    case $a in
      '' | *[!A-Za-z0-9_./:=@%+,-]*) a="'$a'" ;; # no word here holds a quote
    esac
    out+="${out:+ }$a"
  done
  show "$out"
}
indent() { sed -e 's/^/     /' -e "s|$W|\$W|g" "$@"; }

# expect WANT CMD...: run CMD, show its output (stdout and stderr, in order),
# and stop the demo unless it exits with WANT.
expect() {
  local want=$1 rc
  shift
  showcmd "$@"
  "$@" >"$W/last.log" 2>&1
  rc=$?
  indent "$W/last.log"
  [ "$rc" -eq "$want" ] || die "expected exit $want from '$1 ${2:-}', got $rc"
}

# expect_json WANT OUT CMD...: as expect, but stdout (JSON) goes to OUT.
expect_json() {
  local want=$1 out=$2 rc
  shift 2
  showcmd "$@" --json
  "$@" --json >"$out" 2>"$W/last.log"
  rc=$?
  indent "$W/last.log"
  [ "$rc" -eq "$want" ] || die "expected exit $want from '$1 ${2:-}', got $rc"
}

# -- the host side, run inside the network namespace (demo.sh --host-side) ----

host_side() {
  local H="$W/host" USB="$W/usb" API="$W/api" port="" rc
  API_PID=""
  trap '[ -z "$API_PID" ] || kill "$API_PID" 2>/dev/null' EXIT

  step "3. Host (offline): no way out"
  if [ "$NETNS" = 1 ]; then
    show ip link set lo up
    ip link set lo up || die "cannot bring up loopback in the namespace"
    expect 0 ip -brief address
    show ip route
    [ -z "$(ip route)" ] || die "the namespace has a route: $(ip route)"
    say "  (no routes)"
    show "python3 -c 'socket.create_connection((\"1.1.1.1\", 443)) ...'"
    python3 - <<'EOF' 2>&1 | indent || die "a non-loopback address was reachable"
import socket
import sys

for addr in (("1.1.1.1", 443), ("192.0.2.1", 80)):
    try:
        socket.create_connection(addr, timeout=3).close()
    except OSError as exc:
        print(f"connect {addr[0]}:{addr[1]} -> {exc.strerror or exc}")
    else:
        print(f"connect {addr[0]}:{addr[1]} -> CONNECTED")
        sys.exit(1)
EOF
    ok "only loopback is up; connecting to a non-loopback address fails"
  else
    say "no network namespace here: the host side runs with the machine's network"
  fi

  step "4. Host: import the stick and verify the bundle"
  expect 0 kit import "$USB" --home "$H"
  ok "manifest, trust root and issuer signature checked; bundle staged in the inbox"
  expect 0 kit verify "$BID" --task nightly-export --command 'python3 job.py' \
    --home "$H"
  ok "sealed to this host, env prod, task nightly-export, in time, uses left"

  step "5. Host: a local API that knows only the token's SHA-256"
  show python3 api_server.py --hash-file "$API/token.sha256" --port-file \
    "$API/port" --timeout 30 "&"
  python3 -u "$DEMO_DIR/api_server.py" --hash-file "$API/token.sha256" \
    --port-file "$API/port" --timeout 30 2>"$API/server.log" &
  API_PID=$!
  for _ in $(seq 50); do
    [ -s "$API/port" ] && break
    sleep 0.1
  done
  [ -s "$API/port" ] || die "the API server did not start"
  port=$(cat "$API/port")
  URL="http://127.0.0.1:$port/v1/export"
  say "listening on 127.0.0.1:$port"
  show "KIT_SECRET=not-the-token python3 job.py --url $URL   # without kit"
  (cd "$DEMO_DIR" && KIT_SECRET=not-the-token python3 job.py --url "$URL") \
    >"$W/last.log" 2>&1
  rc=$?
  indent "$W/last.log"
  if [ "$rc" -eq 0 ] || ! grep -q 'HTTP 401' "$W/last.log"; then
    die "the API did not refuse a wrong token with 401"
  fi
  ok "with a wrong token the API answers 401"

  step "6. Host: kit run releases the token to the job, and only to it"
  cd "$DEMO_DIR" || die "cannot enter $DEMO_DIR"
  expect 0 kit run "$BID" --task nightly-export --dataset orders-export \
    --home "$H" -- python3 job.py --url "$URL"
  grep -q 'HTTP 200' "$W/last.log" || die "the job did not get HTTP 200"
  wait "$API_PID"
  rc=$?
  API_PID=""
  indent "$API/server.log"
  [ "$rc" -eq 0 ] || die "the API server saw no authorized request (exit $rc)"
  ok "receipt written before release; the job called the API with the token: 200"
  ok "the API server has exited on its own"

  step "7. Host: refusals"
  expect 120 kit run "$BID" --task weekly-export --home "$H" -- \
    python3 job.py --url "$URL"
  ok "wrong task: refused with exit 120, a denial receipt written"
  expect 120 kit run "$BID" --task nightly-export --dataset payments-db \
    --home "$H" -- python3 job.py --url "$URL"
  ok "a dataset outside the identity's scope: refused with exit 120"
  expect 120 kit run "$BID" --task nightly-export --home "$H" -- \
    python3 job.py --url "$URL"
  ok "past --max-uses 1: refused with exit 120, a denial receipt written"

  step "8. Host: receipts back onto the stick"
  expect 0 kit receipts export --home "$H" --to "$USB"
  ok "receipts are signed by the host key, hash-chained, with a signed checkpoint"
}

if [ "${1:-}" = --host-side ]; then
  : "${W:?}" "${BID:?}" "${NETNS:?}"
  host_side
  exit 0
fi

# -- the operator, then the auditor -------------------------------------------

command -v kit >/dev/null || die "kit is not on PATH (run 'make demo')"
W=$(mktemp -d "${TMPDIR:-/tmp}/kit-demo.XXXXXX") || die "mktemp failed"
cleanup() {
  if [ "${KEEP:-0}" = 1 ]; then
    printf '\nKEEP=1: the work folder is kept: %s\n' "$W"
  else
    rm -rf "$W"
  fi
}
trap cleanup EXIT
umask 077
S="$W/signer" H="$W/host" USB="$W/usb"
mkdir -p "$W/api"

printf 'kit demo: operator, offline host and auditor on one machine\n'
# shellcheck disable=SC2016 # $W is printed literally, as in the steps below
printf '   work folder $W = %s (removed at the end unless KEEP=1)\n' "$W"
# shellcheck disable=SC2016
printf '   $W/usb stands for the USB stick carried between them\n'

if unshare -n true 2>/dev/null; then
  NETNS=1 ns=(unshare -n)
  say "host commands run under 'unshare -n': a network namespace with loopback only"
else
  NETNS=0 ns=()
  say "NOTE: 'unshare -n' is not possible here (it needs root); the host commands"
  say "      run WITHOUT a network namespace, so the no-network proof is skipped"
fi

python3 -c 'import secrets; print(secrets.token_urlsafe(24))' >"$W/passphrase" ||
  die "cannot write the passphrase file"
chmod 600 "$W/passphrase"
export KIT_PASSPHRASE_FILE="$W/passphrase"
say "signer passphrase: random, in a 0600 file, given as KIT_PASSPHRASE_FILE"
say "--kdf interactive is a DEMO SETTING (fast Argon2id); keep the default for real"

step "1. Operator: signer, host enrollment"
expect 0 kit signer init --home "$S" --name acme-ops --kdf interactive
signer_fp=$(grep -oE '([0-9a-f]{4} ){9}[0-9a-f]{4}' "$W/last.log")
expect 0 kit export --home "$S" --to "$USB"
ok "the trust root is on the stick"
expect 0 "${ns[@]}" kit host init --home "$H" --name build-01 --env prod \
  --trust "$USB/trust-root.kit" --out "$W/enroll-build-01.kit"
host_fp=$(grep -oE '([0-9a-f]{4} ){9}[0-9a-f]{4}' "$W/last.log" | sed -n 1p)
request_fp=$(grep -oE '([0-9a-f]{4} ){9}[0-9a-f]{4}' "$W/last.log" | sed -n 2p)
if [ -z "$signer_fp" ] || [ "$signer_fp" != "$host_fp" ]; then
  die "trust root fingerprints differ: signer '$signer_fp', host '$host_fp'"
fi
ok "fingerprint pinned by the host = the signer's: $host_fp"
expect 0 kit enroll "$W/enroll-build-01.kit" --home "$S"
enrolled_fp=$(grep -oE '([0-9a-f]{4} ){9}[0-9a-f]{4}' "$W/last.log")
if [ -z "$request_fp" ] || [ "$request_fp" != "$enrolled_fp" ]; then
  die "request fingerprints differ: host '$request_fp', signer '$enrolled_fp'"
fi
ok "host build-01 (env prod) and its public keys are in the signer's ledger"
ok "request enrolled = the one the host made: $enrolled_fp"

step "2. Operator: issue a bundle carrying a fresh API token"
TOKEN=$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')
[ ${#TOKEN} -ge 40 ] || die "no token generated"
SHA256='import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())'
printf '%s' "$TOKEN" | python3 -c "$SHA256" >"$W/api/token.sha256" ||
  die "cannot hash the token"
say "a ${#TOKEN}-character random token, held in a shell variable only;"
say "the API gets only its SHA-256 (\$W/api/token.sha256)"
show "kit policy check bundles   # the workflow identities, declared as code"
kit policy check "$REPO/bundles" >"$W/last.log" 2>&1 || {
  indent "$W/last.log"; die "the shipped declarations do not pass"; }
indent "$W/last.log"
show "printf '%s' \"\$TOKEN\" | kit issue --home $S --identity nightly-export-prod" \
  "--bundles bundles --host build-01 --ttl 1h --secret-stdin --json"
printf '%s' "$TOKEN" | kit issue --home "$S" --identity nightly-export-prod \
  --bundles "$REPO/bundles" --host build-01 --ttl 1h \
  --secret-stdin --json >"$W/issue.json" 2>"$W/last.log"
rc=$?
indent "$W/last.log"
[ "$rc" -eq 0 ] || die "kit issue failed (exit $rc)"
BID=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["bundle_id"])' \
  <"$W/issue.json" 2>/dev/null) || die "kit issue --json printed no bundle_id"
ok "bundle $BID: identity nightly-export-prod, sealed to build-01, task nightly-export, 1 use, 1 h, signed"
expect 0 kit export --home "$S" --to "$USB"
expect 0 ls "$USB"

if [ "$NETNS" = 1 ]; then
  show "unshare -n bash demo.sh --host-side   # steps 3 to 8 inside the namespace"
fi
W="$W" BID="$BID" NETNS="$NETNS" DEMO_DIR="$DEMO_DIR" \
  "${ns[@]}" bash "$SELF" --host-side || die "the host side failed"

step "9. Auditor: reconcile the receipts against the ledger"
expect 0 kit reconcile "$USB" --home "$S"
expect_json 0 "$W/reconcile.json" kit reconcile "$USB" --home "$S"
python3 - "$W/reconcile.json" "$BID" <<'EOF' || die "the reconciliation is not as expected"
import json
import sys

try:
    with open(sys.argv[1]) as f:
        report = json.load(f)
    bundles = {b["bundle_id"]: b for b in report["bundles"]}
except (OSError, ValueError, KeyError, TypeError) as exc:
    print(f"   FAIL: kit reconcile --json printed no usable report ({exc!r})")
    sys.exit(1)
b = bundles.get(sys.argv[2])
reasons = []
problems = []
if b is None:
    problems.append("the bundle is not in the report")
else:
    if (b["status"], b["uses"]) != ("used", 1):
        problems.append(f"bundle is {b['status']} x{b['uses']}, expected used x1")
    reasons = [d.split()[0] for d in b["denials"]]
    for want in ("wrong-task", "uses-exhausted"):
        if want not in reasons:
            problems.append(f"no {want} denial listed for it (got {reasons})")
if report["anomalies"] or not report["clean"]:
    problems.append(f"anomalies: {report['anomalies']}")
for p in problems:
    print(f"   FAIL: {p}")
if problems:
    sys.exit(1)
print(f"   ok: {report['receipts']} receipts, bundle used 1x of 1")
print(f"   ok: denials listed: {', '.join(reasons)}")
print("   ok: no anomalies (signatures, chain, checkpoint all match)")
EOF

step "10. Proof: the token is in no file"
nfiles=$(find "$W" -type f | wc -l)
# The pattern comes through a pipe (process substitution), so the token is not
# in grep's argv nor in a file.
grep -rqasF -f <(printf '%s\n' "$TOKEN") "$W"
case $? in
  1) ok "none of the $nfiles files under \$W (signer, host, stick, ledger and" \
    "journal databases, logs) contains the token" ;;
  0) die "the token was found in a file under $W" ;;
  *) die "could not scan $W" ;;
esac
unset TOKEN

printf '\nDemo complete: every step gave the expected result.\n'
