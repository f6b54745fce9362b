"""The search engine without HTTP: what C-FIND and QIDO-RS share (search/engine.py)."""

from __future__ import annotations

import pytest
from dicom_factory import make_instance, stow
from pydicom.uid import generate_uid

from dicomweb_couch.appkeys import SEARCH
from dicomweb_couch.search.matching import QueryError


async def test_plain_parameters_give_data_sets_at_every_level(client):
    study, series = generate_uid(), generate_uid()
    sops = [generate_uid() for _ in range(3)]
    assert (await stow(client, [make_instance(study, series, sop) for sop in sops]))[0] == 200
    engine = client.server.app[SEARCH]

    studies = await engine.search("study", {"StudyInstanceUID": study})
    [record] = studies.records
    assert record["0020000D"]["Value"] == [study]
    assert record["00201208"]["Value"] == [3]
    assert "00081190" not in record  # no url_for: no RetrieveURL
    assert not studies.more and not studies.stale

    [found] = (await engine.search("series", {}, study=study)).records
    assert found["0020000E"]["Value"] == [series] and found["00201209"]["Value"] == [3]

    page = await engine.search("instance", {"limit": "2"}, study=study, series=series)
    assert [r["00080018"]["Value"][0] for r in page.records] == sorted(sops)[:2] and page.more

    linked = await engine.search("instance", {"SOPInstanceUID": sops[0]}, study=study,
                                 url_for=lambda *uids: "/".join(uids))
    assert linked.records[0]["00081190"]["Value"] == [f"{study}/{series}/{sops[0]}"]


async def test_bad_queries_and_levels_are_refused(client):
    engine = client.server.app[SEARCH]
    with pytest.raises(QueryError, match="limit"):
        await engine.search("study", {"limit": "-1"})
    with pytest.raises(ValueError, match="level"):
        await engine.search("patient", {})
