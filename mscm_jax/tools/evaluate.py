"""Evaluation by real coding: every image is compressed to a file, decoded, and measured.

    results = evaluate_models(["workdirs/q1", "workdirs/q2"], load_images("samples"))
    write_results_json(results, "results.json", name="mscm4x4")

Conventions (also written into the JSON):

- **bpp** = 8 * (bytes of the whole `.mscm` file, header included) / (H * W)
  of the original, unpadded image; **payload_bpp** counts only the z and y
  streams, as CompressAI's `eval_model` does (it has no header).
- **PSNR / MS-SSIM** (`metrics.rgb_metrics`): the decoded 8-bit RGB image
  against the original; MS-SSIM is null for images under 161 pixels a side
  (undefined there) and its average is over the images where it is defined.
- **Times** in seconds of wall time per image, without one-time JIT
  compilation, which is reported apart (`compile_time`, per model: every
  shape's first compilation, encoder and decoder). `encoding_time` is the
  whole encoder; `decoding_time` the whole decoder, split into
  `entropy_decoding_time` (z, hyper-synthesis and all y stages: the paper's
  "entropy decoding") and `synthesis_time`.
- **Averages** are means of the per-image values, as CompressAI's `eval_model`.

The JSON has CompressAI's layout (`name`, `description`, `results` with one
list entry per model, so several models of one schedule make one RD curve),
plus extra lists and a per-model, per-image section.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from collections.abc import Iterable, Sequence

import numpy as np

from mscm_jax.files import write_atomically
from mscm_jax.tools.metrics import MS_SSIM_MIN_SIDE, rgb_metrics

# Per-image fields averaged into `results`, under CompressAI's names where it has one.
RESULT_KEYS = {
    "bpp": "bpp",
    "payload_bpp": "payload_bpp",
    "psnr-rgb": "psnr",
    "ms-ssim-rgb": "ms_ssim",
    "encoding_time": "encoding_time",
    "decoding_time": "decoding_time",
    "entropy_decoding_time": "entropy_decoding_time",
    "synthesis_time": "synthesis_time",
}
CONVENTIONS = {
    "bpp": "8 * bytes of the whole .mscm file (header included) / (H * W) of the original image",
    "payload_bpp": "8 * bytes of the z and y streams only / (H * W), as CompressAI counts",
    "psnr-rgb": "dB, decoded 8-bit RGB vs original, MSE pooled over pixels and channels, peak 255",
    "ms-ssim-rgb": (
        f"5-scale MS-SSIM on 8-bit RGB, channel mean; null under {MS_SSIM_MIN_SIDE} px a side, "
        "averaged over the images where it is defined"
    ),
    "times": (
        "seconds of wall time per image, JIT compilation excluded; decoding_time = "
        "entropy_decoding_time (z, hyper-synthesis, all y stages) + synthesis_time; "
        "compile_time: one-time compilation per model (all shapes, encoder and decoder)"
    ),
    "averages": "means of per-image values, as CompressAI's eval_model",
}


@dataclasses.dataclass(frozen=True)
class ImageResult:
    """One image coded for real and decoded."""

    name: str
    height: int
    width: int
    bytes: int
    bpp: float
    payload_bpp: float
    header_bytes: int
    z_bits: int
    stream_bits: tuple[int, ...]  # y bits per stage under the integer models (one stream holds them all)
    psnr: float
    ms_ssim: float | None
    encoding_time: float
    decoding_time: float
    entropy_decoding_time: float | None  # None where it does not apply (classical codecs: `baselines`)
    synthesis_time: float | None
    compile_time: float  # JIT compilation this image triggered (0 once its shape is compiled)


@dataclasses.dataclass(frozen=True)
class ModelResult:
    """All images coded with one model."""

    model: str
    schedule: str
    description: str
    step: int | None
    fingerprint: str
    compile_time: float
    images: tuple[ImageResult, ...]

    def mean(self, field: str) -> float | None:
        """Mean of a per-image field over the images where it is defined (None if nowhere)."""
        values = [getattr(r, field) for r in self.images if getattr(r, field) is not None]
        return float(np.mean(values)) if values else None


def load_images(spec: str, max_images: int = 0) -> list[tuple[str, np.ndarray]]:
    """(name, uint8 RGB image) pairs of `spec`.

    `samples`: every view of the built-in sample photos (`data.SAMPLE_SCENES`);
    `samples:SCENE,SCENE`: those scenes' views (e.g. the default held-out
    `samples:chelsea,stereo_motorcycle`); an image file (named by its file
    name); otherwise a folder of PNG/JPEG files, searched recursively, in
    sorted order. `max_images` > 0 keeps the first ones.
    """
    from mscm_jax.training.data import SAMPLE_SCENES, FolderSource, load_sample, read_image

    if spec == "samples" or spec.startswith("samples:"):
        scenes = [s for s in spec.partition(":")[2].split(",") if s] or list(SAMPLE_SCENES)
        unknown = sorted(set(scenes) - set(SAMPLE_SCENES))
        if unknown:
            raise ValueError(f"unknown sample scenes {unknown}; valid: {', '.join(SAMPLE_SCENES)}")
        names = [view for scene in scenes for view in SAMPLE_SCENES[scene]]
        names = names[:max_images] if max_images > 0 else names
        return [(name, load_sample(name)) for name in names]
    if os.path.isfile(spec):
        return [(os.path.basename(spec), read_image(spec))]
    if not os.path.isdir(spec) and "://" not in spec:
        raise FileNotFoundError(
            f"--images {spec!r}: no such image file or folder (or 'samples', 'samples:SCENE,...')"
        )
    source = FolderSource(spec)  # ValueError if it holds no image with a readable header
    root = str(source.root).rstrip("/") + "/"
    images = []
    for path in source.paths:
        if 0 < max_images <= len(images):
            break
        # Not `source.load`: for training it stands in the next image for one that fails to
        # decode, which here would put that image's figures under this one's name, twice.
        try:
            images.append((str(path).removeprefix(root), read_image(path)))
        except ValueError as e:
            warnings.warn(f"{e}: skipped", stacklevel=2)
    if not images:
        raise ValueError(f"--images {spec!r}: none of its images could be decoded ({len(source)} tried)")
    return images


def evaluate_image(codec, name: str, image: np.ndarray) -> ImageResult:
    """Compresses and decompresses one image with a `codec.Codec`; checks the round trip."""
    encoded = codec.compress(image)
    decoded = codec.decompress(encoded.data)
    if not np.array_equal(encoded.y_hat, decoded.y_hat):
        raise RuntimeError(f"{name}: the decoded latent differs from the encoder's (codec bug)")
    metrics = rgb_metrics(image, decoded.image)
    dec = decoded.timings
    return ImageResult(
        name=name, height=encoded.height, width=encoded.width, bytes=len(encoded.data), bpp=encoded.bpp,
        payload_bpp=encoded.payload_bpp, header_bytes=encoded.header_bytes, z_bits=round(encoded.z_bits),
        stream_bits=tuple(round(b) for b in encoded.stage_bits), psnr=metrics["psnr-rgb"],
        ms_ssim=metrics["ms-ssim-rgb"], encoding_time=encoded.timings.total, decoding_time=dec.total,
        entropy_decoding_time=dec.entropy_coding, synthesis_time=dec.synthesis,
        compile_time=encoded.timings.compile + dec.compile,
    )  # fmt: skip


def describe_codec(codec) -> str:
    c = codec.config
    return f"{c.transform}, N={c.N}, M={c.M}, K={c.num_mixtures}, schedule {codec.schedule.name}"


def evaluate_codec(
    codec, images: Sequence[tuple[str, np.ndarray]], model: str = "", progress=None
) -> ModelResult:
    """Every image through `evaluate_image`; `progress` (a tqdm bar or None) advances per image.

    With programs of each image size's own (`Codec.with_size_step(0)`): times
    without the extra rows and columns of a size bucket.
    """
    codec, results = codec.with_size_step(0), []
    for name, image in images:
        results.append(evaluate_image(codec, name, image))
        if progress is not None:
            progress.update(1)
    return ModelResult(
        model=model or codec.source, schedule=codec.schedule.name, description=describe_codec(codec),
        step=codec.step, fingerprint=codec.fingerprint,
        compile_time=sum(r.compile_time for r in results), images=tuple(results),
    )  # fmt: skip


def evaluate_models(
    models: Iterable[str], images: Sequence[tuple[str, np.ndarray]], progress: bool = True
) -> list[ModelResult]:
    """Loads each model (workdir or .mscm-model) and evaluates it on `images`, in the order given."""
    from tqdm import tqdm

    from mscm_jax.coding.codec import Codec

    models = list(models)
    out = []
    with tqdm(total=len(models) * len(images), desc="evaluate", unit="image", disable=not progress) as bar:
        for path in models:
            codec = Codec.load(path)
            bar.set_postfix(model=os.path.basename(str(path).rstrip("/")), refresh=False)
            out.append(evaluate_codec(codec, images, str(path), bar))
    return out


def _finite_or_none(value: float | None) -> float | None:
    """JSON has no inf (a lossless image's PSNR): written as null."""
    return None if value is None or not math.isfinite(value) else value


def results_dict(
    results: Sequence[ModelResult], name: str = "", description: str = "", conventions: dict | None = None
) -> dict:
    """CompressAI `eval_model` layout plus extra lists, conventions and a per-image section."""
    if not results:
        raise ValueError("no results to write")
    schedules = sorted({r.schedule for r in results})
    name = name or "mscm-jax " + "+".join(schedules)
    description = description or (
        f"mscm-jax, {'; '.join(dict.fromkeys(r.description for r in results))}; real coding "
        f"(bpp: whole file incl. header over original pixels), {len(results[0].images)} images"
    )
    lists = {key: [_finite_or_none(r.mean(field)) for r in results] for key, field in RESULT_KEYS.items()}
    lists["compile_time"] = [r.compile_time for r in results]
    models = []
    for r in results:
        images = []
        for image in r.images:
            row = dataclasses.asdict(image)
            row["stream_bits"] = list(image.stream_bits)
            row["psnr"] = _finite_or_none(image.psnr)
            images.append(row)
        meta = {k: v for k, v in dataclasses.asdict(r).items() if k != "images"}
        models.append({**meta, "images": images})
    return {"name": name, "description": description, "results": lists,
            "conventions": conventions or CONVENTIONS, "models": models}  # fmt: skip


def write_results_json(
    results: Sequence[ModelResult],
    path: str | os.PathLike,
    name: str = "",
    description: str = "",
    conventions: dict | None = None,
) -> dict:
    """Writes `results_dict(...)` as indented JSON (atomically); returns the dict."""
    data = results_dict(results, name, description, conventions)
    write_atomically(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"))
    return data


def summary_lines(results: Sequence[ModelResult]) -> list[str]:
    """A short table of the averages, one line per model."""
    head = f"{'model':<32}{'bpp':>9}{'payload':>9}{'PSNR':>8}{'MS-SSIM':>9}{'enc s':>8}{'dec s':>8}"
    lines = [head + f"{'entropy':>9}{'synth':>8}{'compile':>9}"]

    def num(value: float | None, width: int, digits: int) -> str:
        return f"{'null' if value is None else f'{value:.{digits}f}':>{width}}"

    for r in results:
        name = os.path.basename(r.model.rstrip("/")) or r.model
        lines.append(
            f"{name[:31]:<32}{num(r.mean('bpp'), 9, 4)}{num(r.mean('payload_bpp'), 9, 4)}"
            f"{num(r.mean('psnr'), 8, 2)}{num(r.mean('ms_ssim'), 9, 4)}{num(r.mean('encoding_time'), 8, 3)}"
            f"{num(r.mean('decoding_time'), 8, 3)}{num(r.mean('entropy_decoding_time'), 9, 3)}"
            f"{num(r.mean('synthesis_time'), 8, 3)}{r.compile_time:>9.2f}"
        )
    return lines
