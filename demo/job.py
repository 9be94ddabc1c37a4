"""The demo's nightly-export job, started by ``kit run``.

It takes the API token from its environment (KIT_SECRET, as kit delivers it),
calls the API with it as a bearer token, prints the result and exits 0 only
on HTTP 200. It never prints the token.

Usage: kit run BUNDLE --task nightly-export -- python3 job.py --url URL
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="e.g. http://127.0.0.1:8080/x")
    parser.add_argument("--secret-env", default="KIT_SECRET")
    args = parser.parse_args()

    # Take the token out of the environment so nothing this job starts inherits it.
    token = os.environ.pop(args.secret_env, "")
    if not token:
        print(f"job: no token in ${args.secret_env}", file=sys.stderr)
        return 2
    print(f"job: got a {len(token)}-character token from ${args.secret_env}")

    if not args.url.startswith("http://127.0.0.1:"):
        print("job: refusing a URL that is not on 127.0.0.1", file=sys.stderr)
        return 2
    request = urllib.request.Request(  # noqa: S310 - checked to be http://127.0.0.1
        args.url, headers={"Authorization": f"Bearer {token}"}
    )
    del token
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read()
    except OSError as exc:
        print(f"job: cannot reach the API: {exc}", file=sys.stderr)
        return 1
    try:
        result = json.loads(body)
    except ValueError:
        result = body[:200].decode(errors="replace")
    print(f"job: GET {args.url} -> HTTP {status}: {json.dumps(result)}")
    return 0 if status == 200 else 1


if __name__ == "__main__":
    sys.exit(main())
