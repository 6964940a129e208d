"""Pixels as the models take them: uint8 RGB, with a notice for everything converted on the way.

One place for it: the codec (arrays from the API), the command line (image
files) and the training loaders (which turn the notices into warnings) all
convert the same way.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from etils import epath
from PIL import Image, ImageOps

GREY_NOTICE = "grayscale image converted to RGB"
UPRIGHT_NOTICE = "turned upright as its EXIF orientation says"
LOSSLESS_NOTICES = (GREY_NOTICE, UPRIGHT_NOTICE)  # the training loaders do not warn about these
ALPHA_NOTICE = "alpha channel dropped"
SIXTEEN_BIT_NOTICE = "16-bit pixels reduced to 8 bits"
# Pillow's 16-bit greyscale modes; a PNG opened as "I" is 16-bit too (PNG has no 32-bit pixels).
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
UNIDENTIFIED = "not an image file that Pillow can read"
EXIF_ORIENTATION = 0x0112  # 1: as stored; 2-8: mirrored and/or turned by multiples of 90 degrees


def as_rgb_uint8(image: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """uint8 (H, W, 3) of a uint8 grey (H, W) or (H, W, 1), RGB or RGBA array; and what was converted."""
    if isinstance(image, (str, bytes, os.PathLike)):
        raise ValueError(f"expected an image array, got the path {image!r}: read it with mscm_jax.load_image")
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected an 8-bit image (uint8), got {image.dtype}")
    shape = image.shape
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or min(image.shape[:2]) < 1:
        raise ValueError(f"expected a grayscale, RGB or RGBA image, got shape {shape}")
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2), (GREY_NOTICE,)
    if image.shape[2] == 4:
        return np.ascontiguousarray(image[:, :, :3]), (f"RGBA image: {ALPHA_NOTICE}",)
    return np.ascontiguousarray(image), ()


def sixteen_to_eight_bits(values: np.ndarray) -> np.ndarray:
    """0..65535 -> 0..255, rounded to the nearest level (65535 / 255 = 257 exactly)."""
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _exif_orientation(image: Image.Image, notices: list[str]) -> int:
    """The EXIF orientation tag, 1 (as stored) where there is none or the EXIF data cannot be read."""
    with warnings.catch_warnings():
        # Pillow's "Corrupt EXIF data": a damaged tag reads as absent; a block it cannot parse is said below.
        warnings.simplefilter("ignore")
        try:
            return int(image.getexif().get(EXIF_ORIENTATION, 1))
        except Exception as e:  # EXIF is optional metadata: damaged, it must not stop the pixels
            notices.append(f"EXIF data unreadable ({type(e).__name__}: {e}): read as stored")
            return 1


def read_image(path: str | epath.Path) -> tuple[np.ndarray, tuple[str, ...]]:
    """An image file Pillow reads (PNG, JPEG, ...), local or remote, as uint8 RGB; and what was converted.

    16-bit greyscale is reduced to 8 bits (Pillow's own conversion would clip
    it at 255); palette, CMYK and other 8-bit modes are converted to RGB;
    alpha is dropped. 32-bit integer and float pixels are refused: their
    range is not known. A photo whose EXIF orientation says it is shown turned
    (as phone cameras write them) is turned upright: the decoded PNG, which
    has no orientation tag, then shows what the viewer of the original saw.
    Of an animation or a multi-page file, the first frame is read.
    """
    path = epath.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such image: {path}")
    notices: list[str] = []
    with path.open("rb") as f:
        try:
            with Image.open(f) as opened:
                img, mode, file_format = opened, opened.mode, opened.format
                frames = getattr(opened, "n_frames", 1)
                if frames > 1:
                    notices.append(f"the first of its {frames} frames")
                orientation = _exif_orientation(opened, notices)
                if orientation in range(2, 9):
                    img = ImageOps.exif_transpose(opened)
                    notices.append(UPRIGHT_NOTICE)
                if mode in SIXTEEN_BIT_MODES or (mode == "I" and file_format == "PNG"):
                    array = sixteen_to_eight_bits(np.asarray(img))
                    notices.append(SIXTEEN_BIT_NOTICE)
                elif mode in ("I", "F"):
                    kind = "32-bit integer" if mode == "I" else "floating-point"
                    raise ValueError(
                        f"cannot read image {path}: {kind} pixels (Pillow mode {mode}) are not supported; "
                        "give 8- or 16-bit pixels (PNG, JPEG)"
                    )
                elif mode == "LA":
                    array = np.asarray(img.convert("L"))
                    notices.append(f"grayscale image with alpha: {ALPHA_NOTICE}")
                elif mode in ("RGB", "RGBA", "L"):
                    array = np.asarray(img)
                else:
                    array = np.asarray(img.convert("RGB"))
                    notices.append(f"Pillow mode {mode} image converted to RGB")
        except Image.UnidentifiedImageError as e:
            raise ValueError(f"cannot read image {path}: {UNIDENTIFIED}") from e
        except (OSError, Image.DecompressionBombError) as e:
            raise ValueError(f"cannot read image {path}: {e}") from e
    image, converted = as_rgb_uint8(array)
    return image, (*notices, *converted)
