"""``python -m dicomweb_couch healthcheck [--ready]``: ask the local server's ``/healthz`` (or ``/readyz``).

The container's ``HEALTHCHECK``: the slim image has no curl, and the port and prefix come from the
same settings as the server's (``DICOMWEB_COUCH_PORT`` ...). Exit status 0 when it answers 200.
"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request

from dicomweb_couch.settings import Settings


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m dicomweb_couch healthcheck")
    p.add_argument("--ready", action="store_true", help="ask /readyz (ready for traffic) instead of /healthz")
    p.add_argument("--timeout", type=float, default=3.0)
    args = p.parse_args(argv)
    settings = Settings.load()
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    url = f"http://{host}:{settings.port}/{'readyz' if args.ready else 'healthz'}"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as resp:
            return 0 if resp.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
