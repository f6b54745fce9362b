"""Concurrent writers of one SOP Instance UID (issue 9, item 7): every answer is truthful.

Identical copies: all succeed, one document. Different versions at the same moment: all succeed
(last write wins; each 200 means that version was stored), no false 503, and what is stored at
the end is byte-exact one of the versions whose writer was told it was stored.
"""

from __future__ import annotations

import asyncio

from dicom_factory import make_instance, stow
from pydicom.uid import generate_uid

WRITERS = 12


async def wado(client, study: str, series: str, sop: str) -> bytes:
    resp = await client.get("/wado", params={"requestType": "WADO", "studyUID": study, "seriesUID": series,
                                             "objectUID": sop})
    assert resp.status == 200
    return await resp.read()


async def instances_of(client, study: str) -> list:
    resp = await client.get(f"/studies/{study}/instances")
    return await resp.json() if resp.status == 200 else []


async def test_identical_copies_at_once_all_succeed(client):
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    data = make_instance(study, series, sop)
    answers = await asyncio.gather(*[stow(client, [data]) for _ in range(WRITERS)])
    assert [status for status, _ in answers] == [200] * WRITERS, answers
    assert await wado(client, study, series, sop) == data
    assert len(await instances_of(client, study)) == 1


async def test_different_versions_at_once_all_succeed_and_one_is_kept(client):
    study, series, sop = generate_uid(), generate_uid(), generate_uid()
    for round_ in range(2):
        versions = [make_instance(study, series, sop, description=f"round {round_} version {i}")
                    for i in range(WRITERS)]
        answers = await asyncio.gather(*[stow(client, [v]) for v in versions])
        assert [status for status, _ in answers] == [200] * WRITERS, \
            [body for status, body in answers if status != 200][:2]
        assert await wado(client, study, series, sop) in versions
    assert len(await instances_of(client, study)) == 1
