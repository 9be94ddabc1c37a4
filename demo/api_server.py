"""A tiny HTTP API for the demo: it accepts one bearer token, known only by hash.

It listens on 127.0.0.1 on a free port, writes that port to --port-file, and
answers GET /v1/export with 200 only when SHA-256(bearer token) equals the hash
in --hash-file; anything else gets 401 (no or wrong token) or 404. It never
sees the token in clear except in a request, and never logs it.

It is bounded: it exits after its first authorized request, or after
--timeout seconds, whichever comes first (exit 0 if it served one, else 1).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path


class Handler(BaseHTTPRequestHandler):
    server: ApiServer

    def do_GET(self) -> None:  # http.server's naming
        if self.path != "/v1/export":
            self._reply(404, {"error": "not found"})
            return
        auth = self.headers.get("Authorization", "")
        scheme, _, token = auth.partition(" ")
        digest = hashlib.sha256(token.encode()).hexdigest()
        if scheme != "Bearer" or not hmac.compare_digest(
            digest, self.server.token_sha256
        ):
            self._reply(401, {"error": "missing or wrong bearer token"})
            return
        self.server.authorized += 1
        self._reply(200, {"ok": True, "dataset": "nightly-export", "rows": 1024})

    def _reply(self, status: int, body: dict[str, object]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.server.log(f"GET {self.path} -> {status}")

    def log_message(self, format: str, *args: object) -> None:
        """Silence the default log line; ``ApiServer.log`` writes a safe one."""


class ApiServer(HTTPServer):
    def __init__(self, token_sha256: str) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.token_sha256 = token_sha256
        self.authorized = 0

    def log(self, message: str) -> None:
        print(f"api: {message}", file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hash-file", type=Path, required=True)
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()

    try:
        token_sha256 = args.hash_file.read_text().strip().lower()
    except OSError as exc:
        print(f"api: cannot read --hash-file: {exc.strerror}", file=sys.stderr)
        return 2
    if len(token_sha256) != 64 or set(token_sha256) - set("0123456789abcdef"):
        print("api: --hash-file must hold one SHA-256 hex digest", file=sys.stderr)
        return 2
    server = ApiServer(token_sha256)
    server.timeout = 0.2  # handle_request() wakes up this often to check the clock
    port = server.server_address[1]
    tmp = args.port_file.with_name(args.port_file.name + ".tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, args.port_file)  # readers see the whole port or nothing
    server.log(f"listening on 127.0.0.1:{port} for {args.timeout:g} s")

    deadline = time.monotonic() + args.timeout
    try:
        while not server.authorized and time.monotonic() < deadline:
            server.handle_request()
    finally:
        server.server_close()
    if server.authorized:
        server.log("served the authorized request; exiting")
        return 0
    server.log("timed out without an authorized request; exiting")
    return 1


if __name__ == "__main__":
    sys.exit(main())
