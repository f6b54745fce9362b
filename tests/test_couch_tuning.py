"""The start-up check of CouchDB's settings for images (store/tuning.py).

Apache CouchDB cannot run here: the advice is tested as the pure function it is, on configurations
shaped like ``GET /_node/_local/_config`` answers, and the "could not check" path against the real
pouchdb-server, which has no such endpoint.
"""

from __future__ import annotations

import configparser
import logging

from conftest import REPO_ROOT

from dicomweb_couch.store import tuning
from dicomweb_couch.store.couch import Couch

# Apache CouchDB 3.5's defaults for the settings the check reads.
DEFAULTS = {
    "couchdb": {"attachment_stream_buffer_size": "4096", "max_attachment_size": "infinity"},
    "chttpd": {"max_http_request_size": "4294967296"},
    "attachments": {"compressible_types": "text/*, application/javascript, application/json, application/xml",
                    "compression_level": "8"},
}


def test_default_config_warns_only_about_the_attachment_buffer():
    [warning] = tuning.advice(DEFAULTS)
    assert "attachment_stream_buffer_size = 4096" in warning
    assert "set [couchdb] attachment_stream_buffer_size = 1048576" in warning


def test_the_recommended_file_gives_no_warning():
    ini = configparser.ConfigParser()
    ini.read(REPO_ROOT / "config" / "couchdb-images.ini")
    config = {s: dict(v) for s, v in DEFAULTS.items()}
    for section in ini.sections():
        config.setdefault(section, {}).update(ini[section])
    assert tuning.advice(config) == []


def test_compressed_dicom_is_named_with_the_pattern_to_remove():
    config = dict(DEFAULTS, couchdb={"attachment_stream_buffer_size": "1048576"},
                  attachments={"compressible_types": "text/*, application/*"})
    [warning] = tuning.advice(config)
    assert "matches application/dicom (by application/*)" in warning
    assert "remove application/* from [attachments] compressible_types" in warning
    config["attachments"] = {"compressible_types": "application/dicom"}
    assert "by application/dicom" in tuning.advice(config)[0]


def test_small_size_limits_are_named_with_their_fix():
    config = dict(DEFAULTS, couchdb={"attachment_stream_buffer_size": "1048576", "max_attachment_size": "104857600"},
                  chttpd={"max_http_request_size": "67108864"})
    warnings = tuning.advice(config)
    assert len(warnings) == 2
    assert "set [couchdb] max_attachment_size = 4294967296" in warnings[0]
    assert "set [chttpd] max_http_request_size = 4294967296" in warnings[1]


def test_missing_or_odd_values_do_not_fail():
    assert len(tuning.advice({})) == 1  # nothing set: CouchDB's 4096-byte default applies
    assert tuning.advice({"couchdb": {"attachment_stream_buffer_size": "lots"}}) == []


async def test_without_the_config_endpoint_it_says_once_it_could_not_check(couch_server, couch_db_name, caplog):
    couch = Couch(couch_server.url, couch_db_name, couch_server.user, couch_server.password)
    await couch.open(30)
    try:
        with caplog.at_level(logging.INFO, logger=tuning.__name__):
            found = await tuning.check(couch)
    finally:
        await couch.close()
    if found or any("CouchDB setting" in r.message for r in caplog.records):  # an Apache CouchDB with admin rights
        return
    assert [r.message for r in caplog.records if "could not check" in r.message] == [
        "could not check CouchDB's settings for images (no admin rights, or not Apache CouchDB); "
        "see config/couchdb-images.ini for the recommended ones"]
