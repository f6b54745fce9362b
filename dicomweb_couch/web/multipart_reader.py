"""Reading a ``multipart/related`` request body as a stream (RFC 2046 5.1, RFC 2387; PS3.18 8.6.1.2).

STOW-RS bodies can be gigabytes and come from clients of every kind, so this reader is liberal
in what it takes and strict about what it hands on:

- a boundary of up to :data:`MAX_BOUNDARY` characters (RFC 2046 allows 70; Orthanc's DICOMweb
  plugin sends 73), quoted or not; bare LF line ends in part headers; transport padding after
  a delimiter;
- a part's bytes are handed on chunk by chunk, never held whole; a part is complete only when
  its delimiter follows it: a body that ends earlier raises :class:`CutOff` instead of a
  clean end, so a truncated upload can never pass for a whole file;
- every wait for the client is bounded (``timeout`` per read): a silent client raises
  :class:`ClientSilent`, a client that went away :class:`ClientGone`;
- part headers are bounded in line length and number (:class:`MalformedBody`), so a hostile
  body cannot make the server hold unbounded header data.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from multidict import CIMultiDict

MAX_BOUNDARY = 200
MAX_HEADER_LINE = 8190  # bytes, as aiohttp's (and Apache's) limit for an HTTP header line
MAX_HEADERS = 100  # header lines in one part

ReadAny = Callable[[], Awaitable[bytes]]
"""The body source: the next bytes that arrived, b"" at the end (aiohttp's ``StreamReader.readany``)."""


class MultipartError(Exception):
    """The body cannot be read on; ``status`` is the HTTP status that says why."""

    status = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class MalformedBody(MultipartError):
    """The body breaks the multipart syntax (RFC 2046 5.1.1)."""


class CutOff(MultipartError):
    """The body ended before the delimiter that closes the current part (or the body)."""


class ClientSilent(MultipartError):
    """The client sent nothing for ``timeout`` seconds (HTTP 408, RFC 9110 15.5.9)."""

    status = 408


class ClientGone(MultipartError):
    """The client closed the connection mid-body: nobody is left to answer."""


class RelatedReader:
    """The parts of one ``multipart/related`` body: ``next_part()`` then ``read_chunk()`` until b""."""

    def __init__(self, read_any: ReadAny, boundary: str, timeout: float | None = None):
        if not 0 < len(boundary) <= MAX_BOUNDARY:
            raise MalformedBody(f"a boundary must have 1 to {MAX_BOUNDARY} characters, not {len(boundary)}")
        try:
            dash_boundary = b"--" + boundary.encode("ascii")
        except UnicodeEncodeError:
            raise MalformedBody("the boundary must be ASCII (RFC 2046 5.1.1)") from None
        self._read_any, self._timeout = read_any, timeout
        self._delimiter = b"\r\n" + dash_boundary
        # The first delimiter may open the body without a CRLF before it: pretend there was one.
        self._buf = bytearray(b"\r\n")
        self._eof = False
        self._in_part = True  # the preamble, skipped like the unread rest of a part
        self._closed = False
        self.parts = 0
        """Parts opened so far."""
        self.part_bytes = 0
        """Bytes of the current part handed on so far."""

    async def next_part(self) -> CIMultiDict[str] | None:
        """Headers of the next part, or None after the close delimiter.

        An unread rest of the current part (or the preamble) is skipped. The epilogue after the
        close delimiter is never read (RFC 2046: it is to be ignored).
        """
        if self._closed:
            return None
        while self._in_part:
            await self.read_chunk()
        del self._buf[:len(self._delimiter)]
        while len(self._buf) < 2:
            await self._fill(lambda: f"the body ended right after a boundary delimiter, after {self.parts} part(s)")
        if self._buf.startswith(b"--"):
            self._closed = True
            return None
        await self._end_of_line("boundary delimiter line")
        headers = await self._headers()
        self.parts += 1
        self.part_bytes = 0
        self._in_part = True
        return headers

    async def read_chunk(self) -> bytes:
        """The next bytes of the current part; b"" once its delimiter has been reached.

        Raises :class:`CutOff` when the body ends before the delimiter: the part is incomplete.
        """
        if not self._in_part:
            return b""
        chunk = await self._until_delimiter()
        self.part_bytes += len(chunk)
        self._in_part = bool(chunk)
        return chunk

    async def _until_delimiter(self) -> bytes:
        """Bytes before the next delimiter (b"" when the buffer starts with one), from the buffer
        or, when it holds none, from the client."""
        keep = len(self._delimiter) - 1  # a delimiter may start in these last bytes
        start = 0
        while True:
            at = self._buf.find(self._delimiter, start)
            verdict = self._delimiter_line_at(at) if at >= 0 else None
            if verdict is False:  # the boundary followed by other text: content (RFC 2046 5.1.1)
                start = at + 1
                continue
            end = at if at >= 0 else max(start, len(self._buf) - keep)
            if end > 0:
                with memoryview(self._buf) as view:
                    chunk = bytes(view[:end])
                del self._buf[:end]
                return chunk
            if verdict:
                return b""
            await self._fill(lambda: "the body holds no boundary delimiter" if not self.parts else
                             f"the body ended inside part {self.parts} after {self.part_bytes} bytes, "
                             "before the boundary delimiter that completes it (a cut-off upload)")

    def _delimiter_line_at(self, at: int) -> bool | None:
        """Whether the delimiter found at ``at`` ends its line as one must (``--``, or transport
        padding and a line end); None while the bytes to tell have not arrived."""
        pos = at + len(self._delimiter)
        rest = bytes(self._buf[pos:pos + MAX_HEADER_LINE + 2])
        line = rest.lstrip(b" \t")
        if rest.startswith(b"--") or line.startswith(b"\n") or line.startswith(b"\r\n"):
            return True
        if line in (b"", b"\r") or rest == b"-":
            return True if self._eof or len(rest) > MAX_HEADER_LINE else None
        return False

    async def _end_of_line(self, what: str) -> None:
        """Skip transport padding (spaces, tabs) and the line end after a delimiter."""
        while (at := self._buf.find(b"\n")) < 0:
            if len(self._buf) > MAX_HEADER_LINE:
                raise MalformedBody(f"the {what} of part {self.parts + 1} goes on for over {MAX_HEADER_LINE} bytes")
            await self._fill(lambda: f"the body ended inside the {what} of part {self.parts + 1}")
        if self._buf[:at].rstrip(b"\r").strip(b" \t"):
            raise MalformedBody(f"the {what} of part {self.parts + 1} has text after the boundary "
                                "(is the boundary parameter the one the body uses?)")
        del self._buf[:at + 1]

    async def _headers(self) -> CIMultiDict[str]:
        fields: list[list[str]] = []
        number, lines = self.parts + 1, 0
        while True:
            while (at := self._buf.find(b"\n")) < 0:
                if len(self._buf) > MAX_HEADER_LINE:
                    raise MalformedBody(f"a header line of part {number} is longer than {MAX_HEADER_LINE} bytes")
                await self._fill(lambda: f"the body ended inside the headers of part {number}")
            if at > MAX_HEADER_LINE:
                raise MalformedBody(f"a header line of part {number} is longer than {MAX_HEADER_LINE} bytes")
            line = bytes(self._buf[:at]).rstrip(b"\r").decode("latin-1")
            del self._buf[:at + 1]
            if not line:
                return CIMultiDict((name, value.strip()) for name, value in fields)
            lines += 1
            if lines > MAX_HEADERS:
                raise MalformedBody(f"part {number} has more than {MAX_HEADERS} header lines")
            if line[0] in " \t" and fields:  # an obsolete folded line continues the field before
                fields[-1][1] += " " + line.strip()
                continue
            name, colon, value = line.partition(":")
            if not colon or not name or name != name.strip():
                raise MalformedBody(f"part {number} has a header line that is no 'Name: value' field: {line[:80]!a}")
            fields.append([name, value])

    async def _fill(self, cut_off: Callable[[], str]) -> None:
        """Append what the client sends next; at the end of the body raise CutOff(cut_off())."""
        if self._eof:
            raise CutOff(cut_off())
        try:
            async with asyncio.timeout(self._timeout):
                data = await self._read_any()
        except TimeoutError:
            raise ClientSilent(f"the client sent nothing for {self._timeout:g} s in part {self.parts}, "
                               f"after {self.part_bytes} bytes of it") from None
        except ConnectionError as exc:
            raise ClientGone(f"the client closed the connection in part {self.parts} ({exc})") from None
        if not data:
            self._eof = True
            raise CutOff(cut_off())
        self._buf += data
