"""Images: the built-in sample photos and image files.

The sample set is the handful of photos bundled inside scikit-image: enough
for demos, tests and CPU-scale experiments, far too small for paper-scale
training (the paper trains on tens of thousands of images).
"""

from __future__ import annotations

import threading
import warnings

import numpy as np
from etils import epath
from PIL import Image

from mscm_jax import images

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
    return images.as_rgb_uint8(image)[0]  # the grey textures, by design


def to_rgb(image: np.ndarray, name: str = "image") -> np.ndarray:
    """uint8 (H, W, 3) of a grey, RGB or RGBA array (`images.as_rgb_uint8`); lossy conversions warn."""
    try:
        image, notices = images.as_rgb_uint8(image)
    except ValueError as e:
        raise ValueError(f"{name}: {e}") from e
    _warn(name, notices)
    return image


def _warn(name: str, notices: tuple[str, ...]) -> None:
    # Replicating grey or turning a photo upright loses nothing, and a folder of such images
    # would warn once per image.
    for notice in notices:
        if notice not in images.LOSSLESS_NOTICES:
            warnings.warn(f"{name}: {notice}", stacklevel=3)


def read_image(path: str | epath.Path) -> np.ndarray:
    """An image file (local or remote path) as uint8 RGB (`images.read_image`); lossy conversions warn."""
    image, notices = images.read_image(path)
    _warn(str(path), notices)
    return image


def load_image_with_notices(spec: str) -> tuple[np.ndarray, tuple[str, ...]]:
    """A sample name (e.g. `astronaut`) or an image path; and what was converted (`images.read_image`)."""
    if spec in SAMPLE_SCENES or spec in GREY_TEXTURES or spec.startswith("stereo_motorcycle"):
        return load_sample(spec), ()
    return images.read_image(spec)


def load_image(spec: str) -> np.ndarray:
    """A sample name (e.g. `astronaut`) or an image path."""
    image, notices = load_image_with_notices(spec)
    _warn(spec, notices)
    return image


def to_float(image: np.ndarray) -> np.ndarray:
    """uint8 (H, W, 3) -> float32 in [0, 1] (the models' input range)."""
    return image.astype(np.float32) / 255.0


# --------------------------------------------------------------------------
# Training sources and the batch loader.
# --------------------------------------------------------------------------

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class ImageSource:
    """A list of images read on demand: `len(source)`, `source.load(i)` -> uint8 RGB."""

    names: list[str]

    def __len__(self) -> int:
        return len(self.names)

    def load(self, index: int) -> np.ndarray:
        raise NotImplementedError


class SampleSource(ImageSource):
    """Built-in photos, held in memory (a few MB)."""

    def __init__(self, names: list[str]):
        self.names = list(names)
        self._images = [load_sample(n) for n in self.names]

    def load(self, index: int) -> np.ndarray:
        return self._images[index]


def _walk(root: epath.Path):
    """Every file under root, recursively (`rglob` is not offered for remote paths)."""
    for entry in root.iterdir():
        if entry.is_dir():
            yield from _walk(entry)
        else:
            yield entry


class FolderSource(ImageSource):
    """Every PNG/JPEG under a directory, recursively (local or remote path).

    Files whose header cannot be read are skipped with a warning at start;
    a file that fails to decode later is replaced by the next one, with a warning.
    """

    def __init__(self, root: str, paths: list[epath.Path] | None = None):
        self.root = epath.Path(root)
        if paths is None:
            if not self.root.is_dir():
                raise FileNotFoundError(f"image folder not found: {root}")
            paths = sorted(p for p in _walk(self.root) if p.suffix.lower() in IMAGE_SUFFIXES)
            readable = []
            for p in paths:
                try:
                    with p.open("rb") as f, Image.open(f) as img:
                        img.size  # noqa: B018 - reads the header only.
                    readable.append(p)
                except Image.UnidentifiedImageError:
                    warnings.warn(f"skipping {p}: {images.UNIDENTIFIED}", stacklevel=2)
                except (OSError, Image.DecompressionBombError) as e:
                    warnings.warn(f"skipping {p}: {e}", stacklevel=2)
            paths = readable
        if not paths:
            raise ValueError(f"no readable PNG/JPEG images under {root}")
        self.paths = paths
        self.names = [str(p) for p in paths]

    def load(self, index: int) -> np.ndarray:
        for k in range(len(self.paths)):
            path = self.paths[(index + k) % len(self.paths)]
            try:
                return read_image(path)
            except ValueError as e:
                warnings.warn(f"{e}; using the next image", stacklevel=2)
        raise ValueError(f"no image under {self.root} could be decoded")


class TfdsSource(ImageSource):
    """A tensorflow-datasets split through `tfds.data_source` (no TensorFlow needed)."""

    def __init__(self, name: str, split: str, data_dir: str | None = None):
        try:
            import tensorflow_datasets as tfds
        except ImportError as e:
            raise ValueError("tfds sources need tensorflow-datasets: pip install tensorflow-datasets") from e
        try:
            self._source = tfds.data_source(name, split=split, data_dir=data_dir)
        except Exception as e:  # tfds raises many types for a missing/unprepared dataset.
            raise ValueError(
                f"cannot open tfds dataset {name!r} split {split!r}: {e} (tfds downloads and prepares a "
                "dataset on first use, into $TFDS_DATA_DIR, default ~/tensorflow_datasets)"
            ) from e
        self.names = [f"{name}[{split}][{i}]" for i in range(len(self._source))]
        if not self.names:
            raise ValueError(f"tfds dataset {name!r} split {split!r} is empty")

    def load(self, index: int) -> np.ndarray:
        return to_rgb(np.asarray(self._source[index]["image"]), self.names[index])


def open_sources(
    source: str,
    eval_source: str = "",
    eval_scenes: tuple[str, ...] = (),
    include_textures: bool = False,
    tfds_split: str = "train",
    tfds_eval_split: str = "validation",
) -> tuple[ImageSource, ImageSource]:
    """(train, held-out eval) sources of a spec: samples, folder:PATH or tfds:NAME[/CONFIG].

    `samples` is split by scene (`eval_scenes` held out with all their views);
    a folder without `eval_source` holds out every 10th file (sorted order).
    """
    if source == "samples":
        unknown = sorted(set(eval_scenes) - set(SAMPLE_SCENES))
        if unknown:
            raise ValueError(f"unknown eval scene(s) {unknown}; scenes: {', '.join(SAMPLE_SCENES)}")
        train = [v for s, views in SAMPLE_SCENES.items() if s not in eval_scenes for v in views]
        held = [v for s in eval_scenes for v in SAMPLE_SCENES[s]]
        if include_textures:
            train += list(GREY_TEXTURES)
        if not train or not held:
            raise ValueError("samples split needs at least one training and one eval scene")
        train_source = SampleSource(train)
        eval_src = SampleSource(held) if not eval_source else open_sources(eval_source)[0]
        return train_source, eval_src
    if source.startswith("folder:"):
        folder = FolderSource(source.removeprefix("folder:"))
        if eval_source:
            return folder, open_sources(eval_source)[0]
        if len(folder.paths) < 2:
            return folder, folder
        held = folder.paths[::10]
        train = [p for i, p in enumerate(folder.paths) if i % 10]
        return FolderSource(folder.root, train), FolderSource(folder.root, held)
    if source.startswith("tfds:"):
        name = source.removeprefix("tfds:")
        train = TfdsSource(name, tfds_split)
        return train, (open_sources(eval_source)[0] if eval_source else TfdsSource(name, tfds_eval_split))
    raise ValueError(f"unknown data source {source!r}; use samples, folder:PATH or tfds:NAME[/CONFIG]")


def random_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A size x size crop with random horizontal and vertical flips.

    Images smaller than the crop (e.g. tfds' 43 x 33 mock images) are first
    padded to it by mirror reflection ('symmetric'), so every crop is full
    size and no black border teaches the model a fake edge.
    """
    h, w = image.shape[:2]
    if h < size or w < size:
        pad_h, pad_w = max(size - h, 0), max(size - w, 0)
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), mode="symmetric")
        h, w = image.shape[:2]
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    crop = image[top : top + size, left : left + size]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    if rng.random() < 0.5:
        crop = crop[::-1]
    return crop


def centre_crop(image: np.ndarray, size: int) -> np.ndarray:
    if size <= 0:
        return image
    h, w = image.shape[:2]
    if h < size or w < size:
        image = np.pad(image, ((0, max(size - h, 0)), (0, max(size - w, 0)), (0, 0)), mode="symmetric")
        h, w = image.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return image[top : top + size, left : left + size]


class BatchLoader:
    """Deterministic random-crop batches, produced by background threads.

    The global batch of step t holds the global samples g = t*B .. t*B+B-1;
    sample g is record `perm_e[g % N]` of epoch e = g // N (a permutation
    seeded by (seed, e)), cropped with a generator seeded by (seed, record, t).
    So a batch is a pure function of (seed, step): the loader's whole state is
    the next step, and a resumed run sees exactly the batches it would have.
    Each process loads only its slice of the global batch.
    """

    def __init__(
        self,
        source: ImageSource,
        global_batch: int,
        crop: int,
        seed: int,
        process_index: int = 0,
        process_count: int = 1,
        workers: int = 4,
        prefetch: int = 4,
    ):
        if global_batch % process_count:
            raise ValueError(f"batch size {global_batch} is not divisible by {process_count} processes")
        self.source, self.global_batch, self.crop, self.seed = source, global_batch, crop, seed
        self.local_batch = global_batch // process_count
        self.offset = process_index * self.local_batch
        self.workers, self.prefetch = max(workers, 1), max(prefetch, 1)
        self.images_loaded = 0
        self.loading_seconds = 0.0
        self._lock = threading.Lock()
        self._perm: tuple[int, np.ndarray] = (-1, np.zeros(0, np.int64))

    def _record(self, g: int) -> int:
        n = len(self.source)
        epoch = g // n
        cached_epoch, perm = self._perm  # one read: safe against other threads' updates.
        if cached_epoch != epoch:
            perm = np.random.default_rng([self.seed, epoch]).permutation(n)
            self._perm = (epoch, perm)
        return int(perm[g % n])

    def batch(self, step: int) -> np.ndarray:
        """This process's part of step `step`'s batch: (local_batch, crop, crop, 3) in [0, 1]."""
        import time

        start = time.perf_counter()
        out = np.empty((self.local_batch, self.crop, self.crop, 3), np.float32)
        for i in range(self.local_batch):
            g = step * self.global_batch + self.offset + i
            record = self._record(g)
            rng = np.random.default_rng([self.seed, record, step])
            out[i] = to_float(random_crop(self.source.load(record), self.crop, rng))
        with self._lock:
            self.loading_seconds += time.perf_counter() - start
            self.images_loaded += self.local_batch
        return out

    @property
    def images_per_second(self) -> float:
        """Capacity of the input pipeline: images per second of loading, times workers."""
        if self.loading_seconds == 0:
            return float("nan")
        return self.images_loaded / self.loading_seconds * self.workers

    def iterate(self, start_step: int, end_step: int):
        """Yields (step, batch) for start_step <= step < end_step, `prefetch` ahead."""
        import collections
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(self.workers, thread_name_prefix="mscm-data") as pool:
            pending = collections.deque()
            next_step = start_step
            while next_step < end_step and len(pending) < self.prefetch:
                pending.append((next_step, pool.submit(self.batch, next_step)))
                next_step += 1
            while pending:
                step, future = pending.popleft()
                if next_step < end_step:
                    pending.append((next_step, pool.submit(self.batch, next_step)))
                    next_step += 1
                yield step, future.result()


def calibration_images(spec: str = "samples", count: int = 4, size: int = 512) -> list[np.ndarray]:
    """The first `count` images of a source spec (`open_sources`), centre crops of at most `size` pixels."""
    if count < 1:
        raise ValueError(f"need at least one calibration image, got {count}")
    if spec == "samples":  # one view of each scene
        source: ImageSource = SampleSource([views[0] for views in SAMPLE_SCENES.values()][:count])
    else:
        source = open_sources(spec)[0]
    images = [source.load(i) for i in range(min(count, len(source)))]
    return [centre_crop(image, min(size, *image.shape[:2])) for image in images]
