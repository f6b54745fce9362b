"""The streaming multipart/related reader on its own: bodies fed in chunks of every size."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dicomweb_couch.web.multipart_reader import (
    MAX_HEADER_LINE,
    ClientGone,
    ClientSilent,
    CutOff,
    MalformedBody,
    RelatedReader,
)


def source(body: bytes, size: int, then: BaseException | None = None):
    chunks = [body[i:i + size] for i in range(0, len(body), size)]

    async def read_any() -> bytes:
        if chunks:
            return chunks.pop(0)
        if then is not None:
            raise then
        return b""

    return read_any


async def read_all(reader: RelatedReader) -> list[tuple[dict, bytes]]:
    parts = []
    while (headers := await reader.next_part()) is not None:
        data = b""
        while chunk := await reader.read_chunk():
            data += chunk
        parts.append((dict(headers), data))
    return parts


def body_of(boundary: str, contents: Iterable[bytes], preamble: bytes = b"", epilogue: bytes = b"") -> bytes:
    body = preamble
    for content in contents:
        body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + content + b"\r\n"
    return body + f"--{boundary}--\r\n".encode() + epilogue


@settings(max_examples=200, deadline=None)
@given(contents=st.lists(st.binary(max_size=300), max_size=4), size=st.integers(1, 64),
       preamble=st.sampled_from([b"", b"ignored\r\n", b"\r\n"]))
def test_parts_come_back_exactly_whatever_the_chunking(contents, size, preamble):
    boundary = "b0undary"
    contents = [c.replace(b"--b0", b"") for c in contents]
    reader = RelatedReader(source(body_of(boundary, contents, preamble, b"epilogue"), size), boundary)
    parts = asyncio.run(read_all(reader))
    assert [data for _, data in parts] == contents
    assert all(h == {"Content-Type": "application/dicom"} for h, _ in parts)


async def test_a_body_whose_boundary_is_only_a_prefix_holds_no_delimiter():
    with pytest.raises(CutOff, match="no boundary delimiter"):
        await read_all(RelatedReader(source(b"--bbx\r\n\r\ndata\r\n--bbx--", 3), "bb"))


@pytest.mark.parametrize("cut", [10, 40, -10, -9, -3])
async def test_a_body_cut_anywhere_raises_cut_off_not_a_short_part(cut):
    body = body_of("bb", [b"x" * 100])
    reader = RelatedReader(source(body[:cut], 7), "bb")
    with pytest.raises(CutOff):
        await read_all(reader)


async def test_unread_part_is_skipped_and_bare_lf_headers_are_read():
    body = b"--bb\nContent-Type: a\n\nfirst\r\n--bb  \t\r\nX: 1\r\n folded\r\n\r\nsecond\r\n--bb--"
    reader = RelatedReader(source(body, 3), "bb")
    assert (await reader.next_part())["Content-Type"] == "a"
    headers = await reader.next_part()
    assert headers["X"] == "1 folded"
    data = b""
    while chunk := await reader.read_chunk():
        data += chunk
    assert data == b"second"
    assert await reader.next_part() is None


@pytest.mark.parametrize("body, words", [
    (b"--bb\r\nX: " + b"h" * MAX_HEADER_LINE + b"\r\n\r\n", "longer than"),
    (b"--bb\r\n" + b"X: 1\r\n" * 101 + b"\r\n", "more than 100"),
    (b"--bb\r\nnot a header\r\n\r\n", "no 'Name: value'"),
])
async def test_hostile_headers_are_malformed(body, words):
    with pytest.raises(MalformedBody, match=words):
        await read_all(RelatedReader(source(body, 1000), "bb"))


async def test_silent_and_vanished_clients():
    async def never() -> bytes:
        await asyncio.sleep(10)
        return b""

    with pytest.raises(ClientSilent) as silent:
        await read_all(RelatedReader(never, "bb", timeout=0.05))
    assert silent.value.status == 408
    with pytest.raises(ClientGone):
        await read_all(RelatedReader(source(b"--bb\r\n\r\nabc", 4, ConnectionResetError("gone")), "bb"))


@pytest.mark.parametrize("boundary", ["", "x" * 201, "é"])
def test_boundaries_out_of_bounds(boundary):
    with pytest.raises(MalformedBody):
        RelatedReader(source(b"", 1), boundary)


async def test_boundary_followed_by_other_text_is_content_not_a_delimiter():
    content = b"a\r\n--bbX not the end\r\n--bb- nor this\r\n--bb\tstill not\r\n--b"
    body = b"preamble\r\n--bbz\r\n" + body_of("bb", [content])
    for size in (1, 5, 1000):
        parts = await read_all(RelatedReader(source(body, size), "bb"))
        assert [data for _, data in parts] == [content]
