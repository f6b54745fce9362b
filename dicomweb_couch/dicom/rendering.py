"""Turning one decoded frame into a consumer image (PS3.18 8.3.5, 8.7.4): pure numpy and Pillow.

The pipeline is the standard's grayscale one (PS3.4 N.2): Modality LUT (rescale, or the Modality
LUT Sequence), then VOI (the ``window`` parameter, else the stored window, else the stored VOI
LUT, else the frame's own range), then MONOCHROME1 inverted, to 8 bits. Colour images (RGB,
decoded YBR, PALETTE COLOR through its lookup tables) are scaled to 8 bits per sample. Then the
``viewport`` region is cut, flipped and scaled, and the image is encoded as JPEG (``quality``),
PNG or GIF.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import numpy as np
from PIL import Image
from pydicom import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut

from dicomweb_couch.errors import DicomwebError

MEDIA_TYPES: Final = {"image/jpeg": "JPEG", "image/png": "PNG", "image/gif": "GIF"}
"""Rendered media types served, the default (PS3.18 Table 8.7.4-1) first."""
THUMBNAIL_SIZE: Final = 128
MAX_VIEWPORT: Final = 4096
"""Largest viewport width and height, in pixels."""
MAX_SOURCE: Final = 65535
"""Largest absolute viewport source offset or size: Rows and Columns are US (PS3.3 C.7.6.3)."""
MAX_REGION_PIXELS: Final = MAX_VIEWPORT * MAX_VIEWPORT
"""Largest source region a viewport may cut beyond the image's own size, in pixels."""
_FUNCTIONS: Final = ("LINEAR", "LINEAR_EXACT", "SIGMOID")


@dataclass(frozen=True)
class Window:
    """A VOI window (PS3.3 C.11.2.1.2): center, width and function."""

    center: float
    width: float
    function: str = "LINEAR"


@dataclass(frozen=True)
class Viewport:
    """``viewport=vw,vh[,sx,sy,sw,sh]`` (PS3.18 8.3.5.1.3): output size and the source region."""

    width: int
    height: int
    sx: float | None = None
    sy: float | None = None
    sw: float | None = None
    sh: float | None = None


@dataclass(frozen=True)
class Rendering:
    """The rendering parameters of a request."""

    window: Window | None = None
    viewport: Viewport | None = None
    quality: int = 90


def parse_parameters(query: Mapping[str, str], thumbnail: bool = False) -> Rendering:
    """Validate ``window``, ``viewport`` and ``quality``; each mistake is a 400 naming the parameter.

    ``annotation`` and ``iccprofile`` are accepted and have no effect (nothing is burnt in, and
    images keep the device's colours). A thumbnail without a viewport fits 128 by 128 pixels.
    """
    window = _window(query["window"]) if query.get("window") else None
    viewport = _viewport(query["viewport"]) if query.get("viewport") else None
    if viewport is None and thumbnail:
        viewport = Viewport(THUMBNAIL_SIZE, THUMBNAIL_SIZE)
    quality = 90
    if query.get("quality"):
        raw = query["quality"]
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 3) or not 1 <= int(raw) <= 100:
            raise DicomwebError(400, f"quality={raw!r}: must be a whole number from 1 to 100 (PS3.18 8.3.5.1.2)")
        quality = int(raw)
    return Rendering(window, viewport, quality)


def _numbers(name: str, raw: str, counts: tuple[int, ...]) -> list[float | None]:
    """Comma-separated finite numbers, empty ones None; 400 unless there are ``counts`` of them."""
    parts = [p.strip() for p in raw.split(",")]
    try:
        values = [float(p) if p else None for p in parts]
    except ValueError:
        values = []
    if len(parts) not in counts or len(values) != len(parts) or any(v is not None and not math.isfinite(v) for v in values):
        raise DicomwebError(400, f"{name}={raw!r}: expected {' or '.join(map(str, counts))} comma-separated numbers")
    return values


def _window(raw: str) -> Window:
    """``window=center,width[,function]`` (PS3.18 8.3.5.1.4)."""
    parts = [p.strip() for p in raw.split(",")]
    center, width = _numbers("window", ",".join(parts[:2]), (2,))
    function = parts[2].upper() if len(parts) == 3 and parts[2] else "LINEAR"
    if len(parts) > 3 or center is None or width is None:
        raise DicomwebError(400, f"window={raw!r}: expected center,width[,function] (PS3.18 8.3.5.1.4)")
    if function not in _FUNCTIONS:
        raise DicomwebError(400, f"window={raw!r}: the function must be one of {', '.join(_FUNCTIONS)}")
    if width <= 0 or (function == "LINEAR" and width < 1):
        raise DicomwebError(400, f"window={raw!r}: the width must be {'at least 1' if function == 'LINEAR' else 'positive'}"
                                 " (PS3.3 C.11.2.1.2)")
    return Window(center, width, function)


def _viewport(raw: str) -> Viewport:
    """``viewport=vw,vh[,sx,sy,sw,sh]`` (PS3.18 8.3.5.1.3)."""
    vw, vh, *region = _numbers("viewport", raw, (2, 6))
    if vw is None or vh is None or not (1 <= vw <= MAX_VIEWPORT and 1 <= vh <= MAX_VIEWPORT) \
            or vw != int(vw) or vh != int(vh):
        raise DicomwebError(400, f"viewport={raw!r}: the width and height must be whole numbers from 1 to {MAX_VIEWPORT}")
    if region and (region[2] == 0 or region[3] == 0):
        raise DicomwebError(400, f"viewport={raw!r}: the source width and height cannot be 0")
    if any(v is not None and abs(v) > MAX_SOURCE for v in region):
        raise DicomwebError(400, f"viewport={raw!r}: the source offsets and sizes must be between -{MAX_SOURCE} "
                                 f"and {MAX_SOURCE} pixels (PS3.18 8.3.5.1.3)")
    return Viewport(int(vw), int(vh), *region)


def render(arr: np.ndarray, ds: Dataset, rendering: Rendering, media_type: str) -> bytes:
    """The frame ``arr`` (as pydicom decodes it, colour as RGB) of the image ``ds``, encoded."""
    image = Image.fromarray(to_8bit(arr, ds, rendering.window))
    if rendering.viewport is not None:
        image = _apply_viewport(image, rendering.viewport)
    out = io.BytesIO()
    kind = MEDIA_TYPES[media_type]
    if kind == "JPEG":
        image.save(out, "JPEG", quality=rendering.quality)
    else:
        image.save(out, kind)
    return out.getvalue()


def to_8bit(arr: np.ndarray, ds: Dataset, window: Window | None = None) -> np.ndarray:
    """Display values, 0-255 (see the module doc)."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if photometric == "PALETTE COLOR":
        rgb = apply_color_lut(arr, ds)
        return _scale(rgb, 16 if rgb.dtype.itemsize > 1 else 8)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4):  # RGB (decoded YBR included)
        return _scale(arr[..., :3], int(ds.get("BitsStored") or 8))
    values = apply_modality_lut(arr, ds).astype(np.float64)
    if window is None and ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        window = Window(_first(ds.WindowCenter), _first(ds.WindowWidth), str(ds.get("VOILUTFunction") or "LINEAR").upper())
        if window.function not in _FUNCTIONS or window.width <= 0:
            window = None
    if window is not None:
        display = apply_window(values, window)
    elif "VOILUTSequence" in ds:
        looked_up = apply_voi_lut(values, ds, prefer_lut=True).astype(np.float64)
        display = _normalize(looked_up)
    else:
        display = _normalize(values)
    if photometric == "MONOCHROME1":
        display = 1.0 - display
    return np.rint(display * 255).astype(np.uint8)


def apply_window(values: np.ndarray, window: Window) -> np.ndarray:
    """Window ``values`` to 0..1 by the function of PS3.3 C.11.2.1.2.1, .3.1 or .3.2."""
    c, w = window.center, window.width
    if window.function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (values - c) / w))
    if window.function == "LINEAR_EXACT":
        return np.clip((values - c) / w + 0.5, 0.0, 1.0)
    if w <= 1:
        return (values > c - 0.5).astype(np.float64)
    return np.clip((values - (c - 0.5)) / (w - 1) + 0.5, 0.0, 1.0)


def _normalize(values: np.ndarray) -> np.ndarray:
    low, high = float(np.min(values)), float(np.max(values))
    return np.zeros_like(values) if high <= low else (values - low) / (high - low)


def _scale(rgb: np.ndarray, bits: int) -> np.ndarray:
    if rgb.dtype == np.uint8 and bits <= 8:
        return rgb
    return np.rint(np.clip(rgb.astype(np.float64) / (2 ** bits - 1), 0.0, 1.0) * 255).astype(np.uint8)


def _first(value: object) -> float:
    """The first of a multi-valued DS (several windows may be stored: the first is the default)."""
    return float(value[0] if isinstance(value, (MultiValue, list, tuple)) else value)  # type: ignore[index, arg-type]


def _apply_viewport(image: Image.Image, viewport: Viewport) -> Image.Image:
    """Cut the source region (negative sizes flip it), then scale it to fit the viewport, keeping its aspect."""
    sx = viewport.sx or 0.0
    sy = viewport.sy or 0.0
    sw = viewport.sw if viewport.sw is not None else image.width - sx
    sh = viewport.sh if viewport.sh is not None else image.height - sy
    box = (min(sx, sx + sw), min(sy, sy + sh), max(sx, sx + sw), max(sy, sy + sh))
    if abs(sw * sh) > max(MAX_REGION_PIXELS, image.width * image.height):
        raise DicomwebError(400, f"viewport: the source region of {abs(sw):.0f} x {abs(sh):.0f} pixels is larger than "
                                 f"the image and than the limit of {MAX_VIEWPORT} x {MAX_VIEWPORT} pixels")
    region = image.crop(tuple(round(v) for v in box))  # type: ignore[arg-type]
    if sw < 0:
        region = region.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if sh < 0:
        region = region.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    scale = min(viewport.width / max(region.width, 1), viewport.height / max(region.height, 1))
    size = (max(1, round(region.width * scale)), max(1, round(region.height * scale)))
    return region.resize(size, Image.Resampling.LANCZOS)
