"""Paging over the whole archive with limit/offset returns every study exactly once, also while
other clients store new studies and add instances to existing ones (issue 14)."""

from __future__ import annotations

from dicom_factory import make_instance, stow
from pydicom.uid import generate_uid


async def page(client, offset: int, limit: int, **params) -> list[str]:
    resp = await client.get("/studies", params={"offset": str(offset), "limit": str(limit), **params})
    assert resp.status == 200, await resp.text()
    return [r["0020000D"]["Value"][0] for r in await resp.json()]


async def test_every_study_exactly_once_while_writes_happen(make_client, couch_db_name):
    reader, writer = await make_client(couch_db_name), await make_client(couch_db_name)
    existing = {}
    for i in range(12):
        study = generate_uid()
        existing[study] = generate_uid()
        assert (await stow(writer, [make_instance(study, existing[study], patient_id=f"P{i:02d}")]))[0] == 200
    seen: list[str] = []
    offset, limit = 0, 5
    while True:
        got = await page(reader, offset, limit)
        seen += got
        if len(got) < limit:
            break
        offset += limit
        # meanwhile: a new study, and a new instance (a new series) in a study already listed and
        # in one not listed yet, through another server process
        new = generate_uid()
        assert (await stow(writer, [make_instance(new, generate_uid(), patient_id="NEW")]))[0] == 200
        for study in (seen[0], list(existing)[-1]):
            assert (await stow(writer, [make_instance(study, generate_uid(), modality="MR")]))[0] == 200
    assert len(seen) == len(set(seen)), "a study came twice"
    assert set(existing) <= set(seen), "a study was skipped"


async def test_filtered_paging_is_exactly_once(client):
    studies = []
    for i in range(7):
        studies.append(generate_uid())
        name = "Pager^Anna" if i % 2 else "Other^Bob"
        assert (await stow(client, [make_instance(studies[-1], generate_uid(), patient_name=name)]))[0] == 200
    wanted = [s for i, s in enumerate(studies) if i % 2]
    pages = [await page(client, offset, 2, PatientName="*ager*") for offset in (0, 2, 4)]
    assert pages[0] + pages[1] == wanted and pages[2] == []
