"""web/responses.py: the URLs a client can follow and DICOM JSON bodies."""

from __future__ import annotations

import json

from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from dicomweb_couch.appkeys import SETTINGS
from dicomweb_couch.dicom.dicomjson import element
from dicomweb_couch.settings import Settings
from dicomweb_couch.web.responses import DICOM_JSON, dicom_json, dicomweb_root, study_url


def request(prefix: str = "", host: str = "archive.example:8042", scheme: str = "http") -> web.Request:
    app = web.Application()
    app[SETTINGS] = Settings(prefix=prefix)
    headers = {"Host": host}
    if scheme == "https":
        headers["X-Forwarded-Proto"] = "https"  # not trusted: the URL stays as the request came
    return make_mocked_request("GET", "/studies", headers=headers, app=app)


def test_urls_follow_the_host_and_prefix_the_client_used():
    assert dicomweb_root(request()) == "http://archive.example:8042"
    assert dicomweb_root(request(prefix="dicom-web/")) == "http://archive.example:8042/dicom-web"
    assert dicomweb_root(request(scheme="https")) == "http://archive.example:8042"
    r = request(prefix="/dicom-web")
    assert study_url(r, "1.2") == "http://archive.example:8042/dicom-web/studies/1.2"
    assert study_url(r, "1.2", "3.4") == "http://archive.example:8042/dicom-web/studies/1.2/series/3.4"
    assert study_url(r, "1.2", "3.4", "5.6") == \
        "http://archive.example:8042/dicom-web/studies/1.2/series/3.4/instances/5.6"
    assert study_url(r, "1.2", None, "5.6") == "http://archive.example:8042/dicom-web/studies/1.2"


def test_dicom_json_bodies_and_elements():
    resp = dicom_json([{"00100020": element("LO", "P1")}], status=202, headers={"Warning": "299 x \"y\""})
    assert resp.status == 202 and resp.content_type == DICOM_JSON == "application/dicom+json"
    assert resp.headers["Warning"] == '299 x "y"'
    assert json.loads(resp.body) == [{"00100020": {"vr": "LO", "Value": ["P1"]}}]
    assert b" " not in resp.body  # compact
    assert element("PN") == {"vr": "PN"}  # an empty attribute has no Value (PS3.18 F.2.5)
    assert element("IS", 1, 2) == {"vr": "IS", "Value": [1, 2]}
