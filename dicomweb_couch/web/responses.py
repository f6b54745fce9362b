"""Helpers shared by the DICOMweb handlers: URLs the client can follow, DICOM JSON bodies."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from dicomweb_couch.appkeys import SETTINGS

DICOM_JSON = "application/dicom+json"


def dicomweb_root(request: web.Request) -> str:
    """Absolute URL of the DICOMweb root as the client reached it (for RetrieveURL, PS3.18 10.4)."""
    return f"{request.scheme}://{request.host}{request.app[SETTINGS].prefix}"


def study_url(request: web.Request, study: str, series: str | None = None, instance: str | None = None) -> str:
    url = f"{dicomweb_root(request)}/studies/{study}"
    if series:
        url += f"/series/{series}"
        if instance:
            url += f"/instances/{instance}"
    return url


def dicom_json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=json.dumps(body, separators=(",", ":")).encode(), status=status,
                        content_type=DICOM_JSON, headers=headers)

