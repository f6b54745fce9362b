"""WADO-RS rendered and thumbnail resources (PS3.18 10.4.1.1.3-4, 8.3.5): JPEG, PNG or GIF images.

- ``.../instances/{sop}/rendered``: its first frame; ``.../frames/{list}/rendered``: those frames
  (one frame: a single image; several: ``multipart/related``, one image a part).
- ``/studies/{s}[/series/{se}]/rendered``: ``multipart/related``, the first frame of every image
  instance, in UID order.
- ``.../thumbnail`` at every level: one small image (128 pixels unless ``viewport`` says
  otherwise): an instance's middle frame; for a series or study, the middle instance (by
  InstanceNumber) of its first series that has images.

Each frame is read alone from the stored file and decoded in a worker thread (see ``frames``);
the image is made by ``rendering``.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import hdrs, web

from dicomweb_couch.dicom import rendering
from dicomweb_couch.errors import DicomwebError
from dicomweb_couch.web import accept, frames, instances
from dicomweb_couch.web.instances import StoredInstance
from dicomweb_couch.web.multipart import MultipartWriter

log = logging.getLogger(__name__)
_OFFERS = [accept.Offer(media_type) for media_type in rendering.MEDIA_TYPES]


def _media_type(request: web.Request, what: str) -> str:
    ranges = accept.acceptable(request.headers.getall(hdrs.ACCEPT, []), request.query)
    return accept.negotiate(ranges, _OFFERS, f"a rendering of {what}").media_type


async def render_frame(request: web.Request, instance: StoredInstance, number: int | None,
                       params: rendering.Rendering, media_type: str) -> bytes:
    """Frame ``number`` (1-based; None: the middle one) of the instance, rendered."""
    remote, pixels = await frames.open_pixels(request, instance)
    try:
        if number is not None:
            frames.check_frames(instance, pixels, [number])
        index = number - 1 if number is not None else (pixels.frames - 1) // 2

        def work() -> bytes:
            arr = frames.frame_array(pixels, frames.stored_frame(pixels, index))
            return rendering.render(arr, pixels.dataset, params, media_type)

        try:
            return await asyncio.to_thread(work)
        except DicomwebError:
            raise
        except Exception as exc:  # pydicom's and Pillow's many ways of refusing odd pixel data
            log.warning("rendering frame %d of instance %s: %r", index + 1, instance.sop, exc)  # the details
            raise DicomwebError(406, frames.unreadable(instance, f"frame {index + 1}", "rendered")) from exc
    finally:
        await remote.aclose()


async def instance_rendered(request: web.Request) -> web.StreamResponse:
    [instance] = await instances.find(request)
    params = rendering.parse_parameters(request.query)
    media_type = _media_type(request, f"instance {instance.sop}")
    return web.Response(body=await render_frame(request, instance, 1, params, media_type), content_type=media_type)


async def frames_rendered(request: web.Request) -> web.StreamResponse:
    numbers = frames.parse_frame_list(request.match_info["frames"])
    [instance] = await instances.find(request)
    frames.check_frame_list(instance, numbers)
    params = rendering.parse_parameters(request.query)
    media_type = _media_type(request, f"frames of instance {instance.sop}")
    if len(numbers) == 1:
        body = await render_frame(request, instance, numbers[0], params, media_type)
        return web.Response(body=body, content_type=media_type)
    async with MultipartWriter(request, media_type) as writer:
        for number in numbers:
            await writer.part(media_type, await render_frame(request, instance, number, params, media_type))
    return writer.response


async def resource_rendered(request: web.Request) -> web.StreamResponse:
    """A study or series: every image instance's first frame."""
    images = [i for i in await instances.find(request) if i.rows]
    params = rendering.parse_parameters(request.query)
    study, series, _ = instances.target(request)
    media_type = _media_type(request, instances.describe(study, series))
    if not images:
        raise DicomwebError(404, f"{instances.describe(study, series)} has no images to render")
    async with MultipartWriter(request, media_type) as writer:
        for instance in images:
            await writer.part(media_type, await render_frame(request, instance, 1, params, media_type))
    return writer.response


async def thumbnail(request: web.Request) -> web.StreamResponse:
    found = await instances.find(request)
    study, series, sop = instances.target(request)
    params = rendering.parse_parameters(request.query, thumbnail=True)
    media_type = _media_type(request, instances.describe(study, series, sop))
    instance = representative(found)
    if instance is None:
        raise DicomwebError(404, f"{instances.describe(study, series, sop)} has no images for a thumbnail")
    return web.Response(body=await render_frame(request, instance, None, params, media_type), content_type=media_type)


def representative(found: list[StoredInstance]) -> StoredInstance | None:
    """The middle image instance (by InstanceNumber) of the first series that has images."""
    images = [i for i in found if i.rows]
    if not images:
        return None
    series = [i for i in images if i.series == images[0].series]
    series.sort(key=lambda i: (i.number is None, i.number or 0, i.sop))
    return series[(len(series) - 1) // 2]
