"""CORS (WHATWG Fetch, "CORS protocol"): pages on other origins, such as a viewer, may call the API.

Two hooks, because a handler that streams (WADO-URI, static files) sends its headers before any
middleware sees the response:

* a middleware answers preflight requests (``OPTIONS`` with ``Access-Control-Request-Method``)
  itself, for every path;
* a response-prepare signal adds ``Access-Control-Allow-Origin`` to every response just before
  its headers go out: data, errors, redirects and 304s alike, so that a browser lets the page read
  a 4xx's reason instead of reporting a bare CORS failure.

A preflight is granted the method and headers it asks for (plus the ones this server reads):
what the server does not support then gets its own readable 405 or 400 from the real request.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import hdrs, web

from dicomweb_couch.errors import problem

ANY = "*"
ALLOWED_HEADERS = ("Accept", "Authorization", "Content-Type", "If-None-Match", "If-Modified-Since", "Range")
"""Request headers this server reads; allowed in every preflight answer."""
EXPOSED_HEADERS = ("Content-Length", "Content-Location", "ETag", "Location", "Warning")
"""Response headers a page may read: sizes for progress bars, QIDO's Warning (PS3.18 8.3.3), ETags."""
MAX_AGE = 7200  # seconds a browser may cache a preflight answer (Chromium's own cap)
_ORIGIN = re.compile(r"^https?://[^/\s?#@]+$")
_METHOD = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP token (RFC 9110 5.6.2)


def normalize_origins(value: str | Iterable[str]) -> tuple[str, ...]:
    """Allowed origins from a setting: ``"*"``, or ``scheme://host[:port]`` values (comma-separated
    in a string); an empty value allows none. Raises ValueError naming a value that is no origin."""
    items = value.split(",") if isinstance(value, str) else value
    origins = []
    for item in items:
        origin = item.strip().rstrip("/").lower()
        if not origin:
            continue
        if origin != ANY and not _ORIGIN.match(origin):
            raise ValueError(f"cors_origins: {item.strip()!r} is not an origin "
                             "(scheme://host[:port], e.g. https://viewer.example.org, or * for any)")
        origins.append(origin)
    return (ANY,) if ANY in origins else tuple(dict.fromkeys(origins))


def setup(app: web.Application, origins: tuple[str, ...]) -> None:
    """Answer preflights and label every response for ``origins`` (no CORS at all when empty)."""
    if not origins:
        return

    def allowed(origin: str | None) -> str | None:
        """The Access-Control-Allow-Origin value for a request from ``origin``, or None."""
        if origins == (ANY,):
            return ANY
        return origin if origin and origin.lower() in origins else None

    @web.middleware
    async def preflight(request: web.Request,
                        handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        method = request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_METHOD, "").strip()
        if request.method != hdrs.METH_OPTIONS or not method:
            return await handler(request)
        origin = request.headers.get(hdrs.ORIGIN)
        if allowed(origin) is None:
            return problem(403, f"origin {origin} may not call this server (setting cors_origins)")
        if not _METHOD.match(method):
            return problem(400, f"Access-Control-Request-Method {method!r} is not an HTTP method")
        methods = {method.upper()}
        route_error = request.match_info.http_exception
        if isinstance(route_error, web.HTTPMethodNotAllowed):
            methods |= route_error.allowed_methods
        asked = [h.strip() for h in request.headers.get(hdrs.ACCESS_CONTROL_REQUEST_HEADERS, "").split(",")]
        headers = list(dict.fromkeys([*ALLOWED_HEADERS, *filter(None, asked)]))
        return web.Response(status=204, headers={
            hdrs.ACCESS_CONTROL_ALLOW_METHODS: ", ".join(sorted(methods)),
            hdrs.ACCESS_CONTROL_ALLOW_HEADERS: ", ".join(headers),
            hdrs.ACCESS_CONTROL_MAX_AGE: str(MAX_AGE),
        })

    async def label(request: web.BaseRequest, response: web.StreamResponse) -> None:
        if origins != (ANY,):
            response.headers.add(hdrs.VARY, hdrs.ORIGIN)  # the answer depends on who asks
        value = allowed(request.headers.get(hdrs.ORIGIN))
        if value is not None:
            response.headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = value
            response.headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = ", ".join(EXPOSED_HEADERS)

    app.middlewares.insert(0, preflight)
    app.on_response_prepare.append(label)
