"""Classical codecs as baselines: JPEG, WebP and AVIF through Pillow, in the evaluation's JSON layout.

    results = evaluate_baseline("webp", load_images("samples"), qualities=(10, 30, 50, 70, 90))
    write_results_json(results, "webp.json", name="WebP", conventions=BASELINE_CONVENTIONS)

Each image is encoded to real bytes by Pillow at each quality (Pillow's
defaults otherwise: 4:2:0 chroma for JPEG, method 4 for WebP), decoded by
Pillow, and measured as our models are (`evaluate`): bpp = 8 * len(bytes) /
(H * W), the whole file (its container header included, as our `.mscm` bpp
includes ours); PSNR and MS-SSIM by `metrics.rgb_metrics`. One quality is one
`ModelResult`, so a sweep of qualities is one RD curve, like CompressAI's
`compressai.utils.bench` results. Which codecs work depends on the Pillow
build (`available_codecs`): AVIF needs Pillow >= 11.3 built with libavif.

`heldout_comparison` puts a trained model's held-out numbers (coded for
real) beside WebP's at the nearest bpp on the same images; `mscm-jax train`
prints it at the end of runs whose config sets `compare_with` (the quickstart).
"""

from __future__ import annotations

import dataclasses
import io
import time
from collections.abc import Sequence

import numpy as np

from mscm_jax.tools.evaluate import CONVENTIONS, ImageResult, ModelResult
from mscm_jax.tools.metrics import rgb_metrics

# name -> (Pillow format, display name, Pillow feature naming its library)
CODECS = {"jpeg": ("JPEG", "JPEG", "jpg"), "webp": ("WEBP", "WebP", "webp"), "avif": ("AVIF", "AVIF", "avif")}
DEFAULT_QUALITIES = (5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95)
BASELINE_CONVENTIONS = {
    **CONVENTIONS,
    "bpp": "8 * bytes of the whole file Pillow wrote (container header included) / (H * W)",
    "payload_bpp": "= bpp (the codec's file is not split into header and payload here)",
    "times": (
        "seconds of wall time per image: Pillow's encode (encoding_time) and decode (decoding_time); "
        "entropy_decoding_time and synthesis_time do not apply (null); compile_time 0"
    ),
}


class BaselineError(ValueError):
    """A codec that this Pillow cannot write, or an unusable quality."""


def _probe(pil_format: str) -> str:
    """'' if Pillow encodes and decodes `pil_format` here, else why not."""
    from PIL import Image

    try:
        buffer = io.BytesIO()
        Image.new("RGB", (16, 16), (90, 140, 200)).save(buffer, format=pil_format, quality=50)
        Image.open(io.BytesIO(buffer.getvalue())).load()
    except (KeyError, OSError, ValueError) as e:
        return f"{type(e).__name__}: {e}"
    return ""


def available_codecs() -> list[str]:
    """The names of `CODECS` that the installed Pillow can encode and decode."""
    return [name for name, (fmt, _, _) in CODECS.items() if not _probe(fmt)]


def check_codec(name: str) -> None:
    """BaselineError (one line, naming what works) unless Pillow can use codec `name`."""
    import PIL

    if name not in CODECS:
        raise BaselineError(f"unknown codec {name!r}; choose from {', '.join(CODECS)}")
    why = _probe(CODECS[name][0])
    if why:
        hint = " (AVIF needs Pillow >= 11.3 built with libavif)" if name == "avif" else ""
        raise BaselineError(
            f"the installed Pillow {PIL.__version__} cannot write {CODECS[name][1]}{hint}: {why}; "
            f"available here: {', '.join(available_codecs()) or 'none'}"
        )


def codec_description(name: str) -> str:
    """E.g. 'WebP (Pillow 13.0.0, webp 1.6.0)'."""
    import PIL
    from PIL import features

    _, display, feature = CODECS[name]
    try:
        library = f", {feature} {features.version(feature)}"
    except ValueError:  # a feature this Pillow does not know
        library = ""
    return f"{display} (Pillow {PIL.__version__}{library})"


def encode(name: str, image: np.ndarray, quality: int) -> bytes:
    """The bytes of `image` (uint8 RGB) in codec `name` at `quality` (0..100)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=CODECS[name][0], quality=int(quality))
    return buffer.getvalue()


def decode(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def evaluate_baseline_image(name: str, quality: int, image_name: str, image: np.ndarray) -> ImageResult:
    """One image encoded and decoded by Pillow, measured as `evaluate.evaluate_image` measures ours."""
    start = time.perf_counter()
    data = encode(name, image, quality)
    encoded = time.perf_counter()
    decoded = decode(data)
    decoding_time = time.perf_counter() - encoded
    if decoded.shape != image.shape:
        raise RuntimeError(f"{image_name}: {name} decoded {decoded.shape}, not {image.shape}")
    metrics = rgb_metrics(image, decoded)
    height, width = image.shape[:2]
    bpp = 8 * len(data) / (height * width)
    return ImageResult(
        name=image_name, height=height, width=width, bytes=len(data), bpp=bpp, payload_bpp=bpp,
        header_bytes=0, z_bits=0, stream_bits=(8 * len(data),), psnr=metrics["psnr-rgb"],
        ms_ssim=metrics["ms-ssim-rgb"], encoding_time=encoded - start, decoding_time=decoding_time,
        entropy_decoding_time=None, synthesis_time=None, compile_time=0.0,
    )  # fmt: skip


def evaluate_baseline(
    name: str,
    images: Sequence[tuple[str, np.ndarray]],
    qualities: Sequence[int] = DEFAULT_QUALITIES,
    progress: bool = True,
) -> list[ModelResult]:
    """One `ModelResult` per quality (in the order given): the points of one RD curve."""
    from tqdm import tqdm

    check_codec(name)
    bad = [q for q in qualities if not 0 <= int(q) <= 100]
    if bad or not qualities:
        raise BaselineError(f"qualities must be integers in 0..100, got {list(qualities)}")
    description = codec_description(name)
    out = []
    with tqdm(total=len(qualities) * len(images), desc=name, unit="image", disable=not progress) as bar:
        for quality in qualities:
            rows = []
            for image_name, image in images:
                rows.append(evaluate_baseline_image(name, quality, image_name, image))
                bar.update(1)
            point = ModelResult(
                model=f"{name} q={quality}",
                schedule=name,
                description=f"{description}, quality {quality}",
                step=None,
                fingerprint="",
                compile_time=0.0,
                images=tuple(rows),
            )
            out.append(point)
    return out


def baseline_json_description(name: str, results: Sequence[ModelResult]) -> str:
    qualities = ", ".join(r.model.rpartition("q=")[2] for r in results)
    return (
        f"{codec_description(name)} through Pillow, qualities {qualities}; real bytes "
        f"(bpp: whole file over original pixels), {len(results[0].images)} images"
    )


# --------------------------------------------------------------------------
# The quickstart's comparison: a trained model beside WebP on its held-out images.
# --------------------------------------------------------------------------


def heldout_images(config) -> list[tuple[str, np.ndarray]]:
    """The held-out images a training run evaluates on, as uint8: the same sources, centre crops, count."""
    from mscm_jax.training.data import centre_crop, open_sources

    d = config.data
    _, source = open_sources(d.source, d.eval_source, tuple(d.eval_scenes), d.include_textures,
                             d.tfds_split, d.tfds_eval_split)  # fmt: skip
    count = min(len(source), d.max_eval_images)
    return [
        (source.names[i], np.ascontiguousarray(centre_crop(source.load(i), d.eval_crop)))
        for i in range(count)
    ]


@dataclasses.dataclass(frozen=True)
class BaselinePoint:
    quality: int
    bpp: float  # means over the images
    psnr: float


@dataclasses.dataclass(frozen=True)
class Comparison:
    """A model and a baseline on the same images; bpp and PSNR are means over the images.

    `nearest` is the baseline quality whose bpp is nearest to the model's;
    when it is more than 5 % off, `other` is the nearest on the other side of
    the model's bpp (None if the baseline has no rate there), so that the model
    sits between two baseline points.
    """

    images: tuple[str, ...]
    shape: tuple[int, int]  # (H, W) of the first image
    model_bpp: float
    model_psnr: float
    baseline: str  # e.g. 'WebP (Pillow 13.0.0, webp 1.6.0)'
    nearest: BaselinePoint
    other: BaselinePoint | None = None

    def lines(self) -> list[str]:
        h, w = self.shape
        lines = [
            f"held-out, coded for real: {len(self.images)} images ({', '.join(self.images)}; {w}x{h}), "
            "bpp of whole files, PSNR of the decoded 8-bit RGB, means over the images:",
            f"  {'this model':<44}{self.model_bpp:8.4f} bpp {self.model_psnr:7.2f} dB",
        ]
        points = [(self.nearest, "the nearest bpp of qualities 0-100")]
        if self.other is not None:
            points.append((self.other, "the nearest on the other side"))
        for p, note in sorted(points, key=lambda point: point[0].bpp):
            lines.append(
                f"  {self.baseline + f' q={p.quality}':<44}{p.bpp:8.4f} bpp {p.psnr:7.2f} dB   ({note})"
            )
        gap = self.nearest.bpp / self.model_bpp - 1
        if abs(gap) > 0.05:
            lines.append(f"  not an equal-rate comparison: the nearest {self.baseline.split()[0]} rate is "
                         f"{100 * gap:+.1f} % off")  # fmt: skip
        return lines


def compare_at_nearest_bpp(
    model: ModelResult, images: Sequence[tuple[str, np.ndarray]], name: str = "webp"
) -> Comparison:
    """`model` (already evaluated on `images`) beside codec `name` at the quality of nearest mean bpp."""
    check_codec(name)
    target = model.mean("bpp")

    def mean_bpp(quality: int) -> float:
        return float(np.mean([8 * len(encode(name, im, quality)) / im[..., 0].size for _, im in images]))

    def point(quality: int) -> BaselinePoint:
        rows = [evaluate_baseline_image(name, quality, n, image) for n, image in images]
        return BaselinePoint(
            quality, float(np.mean([r.bpp for r in rows])), float(np.mean([r.psnr for r in rows]))
        )

    sizes = [mean_bpp(q) for q in range(101)]  # sizes only: metrics for the chosen points
    nearest = min(range(101), key=lambda q: abs(sizes[q] - target))
    other = None
    if abs(sizes[nearest] / target - 1) > 0.05:
        side = [q for q in range(101) if (sizes[q] - target) * (sizes[nearest] - target) < 0]
        other = min(side, key=lambda q: abs(sizes[q] - target)) if side else None
    return Comparison(
        images=tuple(n for n, _ in images), shape=tuple(images[0][1].shape[:2]), model_bpp=target,
        model_psnr=model.mean("psnr"), baseline=codec_description(name), nearest=point(nearest),
        other=None if other is None else point(other),
    )  # fmt: skip


def heldout_comparison(config, workdir, name: str = "webp") -> Comparison:
    """The workdir's model coded for real on the run's held-out images, beside `name` (default WebP)."""
    from mscm_jax.coding.codec import Codec
    from mscm_jax.coding.programs import enable_compilation_cache
    from mscm_jax.tools.evaluate import evaluate_codec

    enable_compilation_cache()
    images = heldout_images(config)
    model = evaluate_codec(Codec.load(workdir), images, str(workdir))
    return compare_at_nearest_bpp(model, images, name)
