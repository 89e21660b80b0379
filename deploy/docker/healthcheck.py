"""The image's HEALTHCHECK: exit 0 when /readyz answers 200, else 1 (standard library only).

The port is read from the server's own command line (PID 1), so a `docker run ... --port N` override
keeps the check right; `AE_HEALTHCHECK_URL` overrides it entirely.
"""

import os
import sys
import urllib.request
from pathlib import Path


def server_port(default: str = "8000") -> str:
    try:
        argv = Path("/proc/1/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return default
    for i, arg in enumerate(argv):
        if arg == "--port" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--port="):
            return arg.partition("=")[2]
    return default


url = os.environ.get("AE_HEALTHCHECK_URL") or f"http://127.0.0.1:{server_port()}/readyz"
try:
    with urllib.request.urlopen(url, timeout=2) as response:
        sys.exit(0 if response.status == 200 else 1)
except Exception as exc:
    print(f"not ready: {url}: {exc}", file=sys.stderr)
    sys.exit(1)
