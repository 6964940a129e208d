"""Images: the built-in sample photos and image files.

The sample set is the handful of photos bundled inside scikit-image: enough
for demos, tests and CPU-scale experiments, far too small for paper-scale
training (the paper trains on tens of thousands of images).
"""

from __future__ import annotations

import warnings

import numpy as np
from etils import epath
from PIL import Image

# Scene name -> loader name(s) in `skimage.data`. Views of one scene stay
# together, so a split by scene never puts the same scene on both sides.
SAMPLE_SCENES: dict[str, tuple[str, ...]] = {
    "astronaut": ("astronaut",),
    "chelsea": ("chelsea",),  # `cat` is the same photo, so it is not listed.
    "coffee": ("coffee",),
    "rocket": ("rocket",),
    "hubble_deep_field": ("hubble_deep_field",),
    "immunohistochemistry": ("immunohistochemistry",),
    "retina": ("retina",),
    "stereo_motorcycle": ("stereo_motorcycle:left", "stereo_motorcycle:right"),
}
GREY_TEXTURES = ("grass", "gravel", "brick")


def load_sample(name: str) -> np.ndarray:
    """A built-in photo as uint8 RGB (H, W, 3); `stereo_motorcycle:left|right` for the views."""
    import skimage.data

    base, _, view = name.partition(":")
    valid = sorted({v for views in SAMPLE_SCENES.values() for v in views} | set(GREY_TEXTURES))
    if name not in valid and not (base == "stereo_motorcycle" and view == ""):
        raise ValueError(f"unknown sample image {name!r}; valid: {', '.join(valid)}")
    image = getattr(skimage.data, base)()
    if base == "stereo_motorcycle":
        image = image[1] if view == "right" else image[0]
    return to_rgb(np.asarray(image), name)


def to_rgb(image: np.ndarray, name: str = "image") -> np.ndarray:
    """uint8 (H, W, 3): grey is replicated, alpha dropped, each with a notice."""
    if image.dtype != np.uint8:
        raise ValueError(f"{name}: expected 8-bit pixels, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    elif image.ndim == 3 and image.shape[2] == 4:
        warnings.warn(f"{name}: RGBA image, alpha channel dropped", stacklevel=2)
        image = image[:, :, :3]
    elif image.ndim == 3 and image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name}: expected a grey, RGB or RGBA image, got shape {image.shape}")
    return np.ascontiguousarray(image)


def read_image(path: str | epath.Path) -> np.ndarray:
    """A PNG/JPEG (local or remote path) as uint8 RGB; grey and RGBA converted."""
    path = epath.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such image: {path}")
    with path.open("rb") as f:
        try:
            with Image.open(f) as img:
                if img.mode not in ("RGB", "RGBA", "L"):
                    warnings.warn(f"{path}: mode {img.mode} converted to RGB", stacklevel=2)
                    img = img.convert("RGB")
                array = np.asarray(img)
        except (OSError, Image.DecompressionBombError) as e:
            raise ValueError(f"cannot read image {path}: {e}") from e
    return to_rgb(array, str(path))


def load_image(spec: str) -> np.ndarray:
    """A sample name (e.g. `astronaut`) or an image path."""
    if spec in SAMPLE_SCENES or spec in GREY_TEXTURES or spec.startswith("stereo_motorcycle"):
        return load_sample(spec)
    return read_image(spec)


def to_float(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 in [0, 1] (the models' input range)."""
    return image.astype(np.float32) / 255.0
