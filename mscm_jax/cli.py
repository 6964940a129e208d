"""The `mscm-jax` command line: thin wrappers around the library."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from mscm_jax.files import write_atomically
from mscm_jax.model.schedules import BUILTIN_PATTERNS, ScheduleError, get_schedule
from mscm_jax.model.tiling import DEFAULT_TILE_PIXELS, MIN_TILE_PIXELS, valid_tile_pixels
from mscm_jax.model.transforms import TRANSFORMS


class UsageError(Exception):
    """A user mistake, reported as one line without a traceback."""


def _refuse_without(switch: str, on: bool, options: dict[str, object]) -> list[str]:
    """Options that mean something only with `switch`, refused without it rather than ignored.

    Returns the names of those given.
    """
    given = [name for name, value in options.items() if value not in (None, "")]
    if given and not on:
        names = given[0] if len(given) == 1 else f"{', '.join(given[:-1])} and {given[-1]}"
        raise UsageError(f"{names} {'goes' if len(given) == 1 else 'go'} with {switch}")
    return given


def cmd_schedules(args: argparse.Namespace) -> int:
    names = args.names or list(BUILTIN_PATTERNS)
    schedules = [get_schedule(n) for n in names]
    m, width = args.latent_channels, max(16, *(len(s.name) + 2 for s in schedules))
    params_header = f"context params (M={m})"
    print(f"{'schedule':<{width}}{'patch':>7}{'stages':>8}{'anchors':>9}{params_header:>26}")
    for s in schedules:
        patch = "-" if s.is_serial else f"{s.patch_size}x{s.patch_size}"
        stages = "H*W" if s.is_serial else str(s.num_stages)
        anchors = "-" if s.is_serial else f"{s.anchor_fraction:.4f}"
        params = s.num_context_weight_sets * s.kernel_size**2 * m * 2 * m
        print(f"{s.name:<{width}}{patch:>7}{stages:>8}{anchors:>9}{params:>26,}")
    if not args.no_draw:
        for s in schedules:
            print(f"\n{s.name}:")
            print(s.draw())
    return 0


def cmd_estimate(args: argparse.Namespace) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from mscm_jax.model.compression_model import CompressionModel, Mode, ModelConfig, init_model
    from mscm_jax.tools import metrics
    from mscm_jax.training.data import load_image, to_float

    if args.integer and not args.model:
        raise UsageError("--integer needs --model: the integer path is converted from a trained model")
    image = load_image(args.image)
    x = jnp.asarray(to_float(image))[None]
    pixels = image.shape[0] * image.shape[1]
    if args.model:
        from mscm_jax.training.train import load_workdir_params

        config, params, step = load_workdir_params(args.model)
        models = [(config.schedule, CompressionModel(config), params)]
        origin = f"{args.model} (step {step}, {config.transform}, N={config.N}, M={config.M})"
    else:
        models = []
        for name in args.schedules:
            config = ModelConfig(
                transform=args.transform, N=args.channels, M=args.channels,
                num_mixtures=args.mixtures, schedule=name,
            )  # fmt: skip
            models.append((name, *init_model(config, jax.random.PRNGKey(args.seed))))
        origin = (
            f"{args.transform}, N=M={args.channels}, K={args.mixtures}, "
            f"randomly initialized (untrained) weights, seed {args.seed}"
        )
    print(f"{args.image}: {image.shape[1]}x{image.shape[0]}; {origin}; estimated rates, no coding")
    print(f"{'schedule':<16}{'stages':>8}{'bpp':>9}{'y bpp':>9}{'z bpp':>9}{'PSNR dB':>9}{'anchors %':>11}")
    for name, model, params in models:
        result = jax.jit(lambda p, x, model=model: model.apply(p, x, Mode.EVAL))(params, x)
        bpp, z_bpp = float(result.bpp[0]), float(result.z_bits[0]) / pixels
        reconstruction = np.asarray(jnp.clip(result.x_hat[0], 0.0, 1.0))
        per_stage = np.asarray(result.bits_per_stage[0])
        anchors = 100 * per_stage[0] / max(per_stage.sum(), 1e-9)
        psnr = metrics.psnr(reconstruction, np.asarray(x[0]), max_value=1.0)
        row = (name, len(per_stage), bpp, bpp - z_bpp, z_bpp, psnr, anchors)
        print("{:<16}{:>8}{:>9.4f}{:>9.4f}{:>9.4f}{:>9.2f}{:>11.1f}".format(*row))
    if args.integer:
        _print_integer_rate(args.model, image)
    return 0


def _print_integer_rate(model: str, image) -> None:
    """The rate of the float path (what training optimizes, coded) beside the integer path's."""
    from mscm_jax.coding.codec import Codec
    from mscm_jax.training.data import calibration_images

    codec = Codec.load(model)
    integer = codec.with_integer_path(calibration_images())
    pixels = image.shape[0] * image.shape[1]
    rates = [c.compress(image).ideal_bits / pixels for c in (codec, integer)]
    print(
        f"coded, information content under the integer models: float path {rates[0]:.4f} bpp, integer path "
        f"{rates[1]:.4f} bpp ({100 * (rates[1] / rates[0] - 1):+.3f} %; calibrated on the sample photos)"
    )


def cmd_train(args: argparse.Namespace) -> int:
    from mscm_jax.training.configs import load_config

    explicit = {"--coordinator": args.coordinator, "--num-processes": args.num_processes,
                "--process-id": args.process_id}  # fmt: skip
    given = _refuse_without("--distributed", args.distributed, explicit)
    if given and len(given) < 3:
        raise UsageError("--coordinator, --num-processes and --process-id go together (none: auto-detect)")
    if given and not 0 <= args.process_id < args.num_processes:
        raise UsageError(f"--process-id must be in 0..{args.num_processes - 1}, got {args.process_id}")
    if args.distributed:
        import jax

        # No arguments: auto-detected on Cloud TPU, Slurm and other supported clusters.
        kwargs = {}
        if args.coordinator:
            kwargs = dict(
                coordinator_address=args.coordinator,
                num_processes=args.num_processes,
                process_id=args.process_id,
                initialization_timeout=args.init_timeout,
            )
        # CPU processes need a collectives backend to talk to each other.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        try:
            jax.distributed.initialize(**kwargs)
        except ValueError as e:
            if kwargs:
                raise
            raise UsageError(
                f"--distributed found no cluster to join ({str(e).rstrip('.')}): JAX detects Cloud TPU, "
                "Slurm, Open MPI and Kubernetes jobs; elsewhere give --coordinator HOST:PORT, "
                "--num-processes and --process-id"
            ) from e
    config = load_config(args.config, args.overrides)
    from mscm_jax.training.train import train

    summary = train(config, args.workdir, progress=not args.no_progress)
    ev = summary.last_eval
    if summary.steps_run:
        print(
            f"trained {summary.steps_run} steps in {summary.seconds:.1f} s "
            f"({summary.steps_per_second:.2f} steps/s); "
            f"input pipeline {summary.input_images_per_second:.0f} images/s; "
            f"skipped non-finite steps: {summary.skipped_steps}"
        )
    else:
        print(
            f"nothing to train: the run is at step {int(summary.state.step)} and "
            f"total_steps is {config.train.total_steps}"
        )
    print(
        f"process {summary.process_index}/{summary.process_count}: parameters sha256 "
        f"{summary.params_sha256[:16]}"
    )
    if ev:
        print(f"held-out: loss {ev['loss']:.4f}, bpp {ev['bpp']:.4f} (estimated), PSNR {ev['psnr']:.2f} dB")
    baseline = config.get("compare_with", "")
    if baseline and summary.process_index == 0:
        from mscm_jax.tools.baselines import heldout_comparison

        print("\n".join(heldout_comparison(config, args.workdir, baseline).lines()))
    return 0


def _print_coding_line(name: str, nbytes: int, pixels: int, stage_bits, timings) -> None:
    bpp = 8 * nbytes / pixels
    stages = timings.stages
    stage_times = " ".join(f"{1e3 * t:.1f}" for t in stages) if len(stages) <= 16 else f"{len(stages)} stages"
    shown = 0 < len(stage_bits) <= 16
    bits = f"; y bits per stage: {' '.join(f'{b:.0f}' for b in stage_bits)}" if shown else ""
    print(f"{name}: {nbytes} bytes, {bpp:.4f} bpp{bits}")
    print(
        f"  time: analysis {1e3 * timings.analysis:.1f} ms, hyper {1e3 * timings.hyper:.1f} ms, "
        f"stages {1e3 * sum(stages):.1f} ms [{stage_times}], synthesis {1e3 * timings.synthesis:.1f} ms; "
        f"entropy coding {1e3 * timings.entropy_coding:.1f} ms (outside compiled calls "
        f"{1e3 * timings.outside:.1f} ms); one-time tracing and compilation {timings.compile:.2f} s"
    )


def _output_path(source: str, output: str, many: bool, suffix: str) -> Path:
    stem = Path(source).stem if Path(source).suffix else Path(source).name
    if not output:
        return Path(stem + suffix)
    out = Path(output)
    if many or out.is_dir() or output.endswith(("/", os.sep)):
        return out / (stem + suffix)
    return out


def _expand_folders(specs: Sequence[str], suffixes: Sequence[str]) -> list[tuple[str, Path | None]]:
    """(input, its path inside the folder given, or None) for every input; folders expanded, recursively."""
    items: list[tuple[str, Path | None]] = []
    for spec in specs:
        folder = Path(spec)
        if not folder.is_dir():
            items.append((spec, None))
            continue
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)
        if not files:
            raise UsageError(f"{spec}: the folder holds no {', '.join(suffixes)} files")
        items += [(str(p), p.relative_to(folder)) for p in files]
    return items


def _planned_outputs(
    specs: Sequence[str], suffixes: Sequence[str], output: str, out_suffix: str
) -> dict[str, Path]:
    """Input -> output file, in order; a folder stands for its `suffixes` files, recursively.

    A folder's files keep their path inside it under the output folder, so equal names in
    subfolders do not collide; inputs that would still write one file are refused before any
    is coded (with --overwrite the later one would replace the earlier one's result).
    """
    items = _expand_folders(specs, suffixes)
    many = len(items) > 1 or any(inside is not None for _, inside in items)
    if many and output and Path(output).suffix.lower() == out_suffix and not Path(output).is_dir():
        raise UsageError(f"-o {output} names one file, but there are {len(items)} inputs; give a folder")
    planned: dict[str, Path] = {}
    writer_of: dict[Path, str] = {}
    for spec, inside in items:
        if inside is None:
            out = _output_path(spec, output, many, out_suffix)
        else:
            out = Path(output or ".") / inside.with_suffix(out_suffix)
        if out in writer_of:
            raise UsageError(
                f"{writer_of[out]} and {spec} would both write {out}; code them to different -o folders"
            )
        writer_of[out] = spec
        planned[spec] = out
    return planned


def _refuse_existing(path: str | Path, overwrite: bool) -> None:
    """Checked before the work: an existing output is kept unless --overwrite."""
    if path and Path(path).exists() and not overwrite:
        raise UsageError(f"{path} exists; pass --overwrite to replace it")


def _write_output(path: Path, write, overwrite: bool) -> None:
    _refuse_existing(path, overwrite)
    write_atomically(path, write)


def _for_each(items, work) -> int:
    """Runs work(item) for every item; an error on one is reported and the rest go on."""
    failures = 0
    for item in items:
        try:
            work(item)
        except (UsageError, ValueError, OSError) as e:
            # The OS's own wording ("[Errno 2] ...") for a file the user named: plain words instead.
            missing = isinstance(e, FileNotFoundError) and e.filename
            print(f"{item}: error: {f'no such file: {e.filename}' if missing else e}", file=sys.stderr)
            failures += 1
    if failures:
        print(f"{failures} of {len(items)} failed", file=sys.stderr)
    return 2 if failures else 0


def cmd_compress(args: argparse.Namespace) -> int:
    from mscm_jax.coding.codec import Codec
    from mscm_jax.coding.programs import enable_compilation_cache
    from mscm_jax.training.data import IMAGE_SUFFIXES, load_image_with_notices

    planned = _planned_outputs(args.images, IMAGE_SUFFIXES, args.output, ".mscm")
    enable_compilation_cache()
    codec = Codec.load(args.model).with_tile_pixels(args.tile_pixels).with_size_step(args.size_step)
    if args.lanes is not None:
        codec = codec.with_lanes(args.lanes)
    print(f"model {args.model}: {codec.config.transform}, N={codec.config.N}, M={codec.config.M}, "
          f"K={codec.config.num_mixtures}, schedule {codec.schedule.name}, "
          f"fingerprint {codec.fingerprint[:16]}")  # fmt: skip
    if codec.integer is None:
        print(
            "files: coder 4 (float entropy networks): they decode where these networks compute bit for bit "
            "alike (same backend and CPU instruction set); `mscm-jax export --integer` makes portable ones"
        )
    else:
        print("files: coder 5 (the integer path): they decode to the same latent on every backend")
    if not args.no_store:
        _store_model(codec, args.model, args.model)

    def compress_one(spec: str) -> None:
        out = planned[spec]
        _refuse_existing(out, args.overwrite)  # before the coding, not only before the writing
        image, notices = load_image_with_notices(spec)  # uint8 RGB: the codec converts nothing more
        result = codec.compress(image)
        _write_output(out, lambda p: p.write_bytes(result.data), args.overwrite)
        for notice in (*notices, *result.notices):
            print(f"{spec}: notice: {notice}")
        _print_coding_line(f"{spec} -> {out}", len(result.data), result.height * result.width,
                           result.stage_bits, result.timings)  # fmt: skip
        print(
            f"  header {result.header_bytes} bytes, payload {result.payload_bpp:.4f} bpp: ideal "
            f"{result.ideal_bits / 8:.0f} bytes (z {result.z_bits / 8:.0f}) + {result.lanes} lanes "
            f"{result.lane_bits / 8:.0f} + coder rounding {result.rounding_bits / 8:+.0f}"
        )

    return _for_each(list(planned), compress_one)


def _store_model(codec, path: str, source: str) -> None:
    """Makes `codec`'s model findable by fingerprint (model_store); a failure is only a warning."""
    from mscm_jax.coding.model_store import ModelStore

    store = ModelStore()
    model_file = path if os.path.isfile(path) else None
    try:
        entry, how = store.add_codec(codec, source=os.path.abspath(source), model_file=model_file)
    except (ValueError, OSError) as e:
        print(f"warning: model not stored in {store.root} ({e}); decoding will need --model", file=sys.stderr)
        return
    print(f"model store: {entry.short} {how} in {store.root}")


def cmd_decompress(args: argparse.Namespace) -> int:
    from PIL import Image

    from mscm_jax.coding.codec import Codec
    from mscm_jax.coding.model_store import ModelStore
    from mscm_jax.coding.programs import enable_compilation_cache

    planned = _planned_outputs(args.files, (".mscm",), args.output, ".png")
    enable_compilation_cache()
    given = Codec.load(args.model).with_tile_pixels(args.tile_pixels) if args.model else None
    store, tiled = ModelStore(), {}

    def codec_for(data: bytes):
        if given is not None:
            return given
        codec = store.load_for_file(data)  # by the file's fingerprint; verified once per model
        if codec.fingerprint not in tiled:
            tiled[codec.fingerprint] = codec.with_tile_pixels(args.tile_pixels)
            print(f"model {codec.fingerprint[:16]} from the store {store.root}: {codec.config.transform}, "
                  f"N={codec.config.N}, M={codec.config.M}, schedule {codec.schedule.name}")  # fmt: skip
        return tiled[codec.fingerprint]

    def decompress_one(path: str) -> None:
        out = planned[path]
        _refuse_existing(out, args.overwrite)
        data = Path(path).read_bytes()
        result = codec_for(data).decompress(data, max_pixels=args.max_pixels)
        # zlib's fastest level: 50-60 ms for 768x512 against 210 ms at Pillow's default (6), about
        # the quickstart model's whole warm decode, for a file 15 % larger (measured).
        png = Image.fromarray(result.image)
        _write_output(out, lambda p: png.save(p, format="PNG", compress_level=1), args.overwrite)
        height, width = result.image.shape[:2]
        _print_coding_line(
            f"{path} -> {out} ({width}x{height})", len(data), height * width, (), result.timings
        )

    return _for_each(list(planned), decompress_one)


def cmd_info(args: argparse.Namespace) -> int:
    """What `.mscm` files hold, from their headers alone (nothing is decoded) and the model store."""
    from mscm_jax.coding import bitstream
    from mscm_jax.coding.model_store import ModelStore, ModelStoreError

    store = ModelStore()
    coders = {
        bitstream.CODER_RANS: "4 (float entropy networks)",
        bitstream.CODER_RANS_INTEGER: "5 (integer path: portable)",
    }

    def info_one(path: str) -> None:
        data = Path(path).read_bytes()
        header, payload = bitstream.unpack(data)
        fingerprint = header.fingerprint.hex()
        try:
            entry = store.entry(store.resolve(fingerprint))
            model = f"{entry.short}, in the store: {entry.describe()}, from {entry.source or '?'}"
        except ModelStoreError:
            model = f"{fingerprint[:16]}, not in the store {store.root}: decoding it needs --model"
        if header.pattern is None:
            schedule = "serial"
        else:
            name = next((n for n, p in BUILTIN_PATTERNS.items() if p == header.pattern), "custom")
            schedule = f"{name} {[list(row) for row in header.pattern]}"
        pixels = header.height * header.width
        print(f"{path}: {header.width}x{header.height}, {len(data)} bytes, {8 * len(data) / pixels:.4f} bpp "
              f"(payload {len(payload)} bytes, header and checksum {len(data) - len(payload)})")  # fmt: skip
        print(f"  model {model}")
        step = f"size step {header.size_step}" if header.size_step else "stages on the image's own latent"
        print(f"  schedule {schedule}; coder {coders[header.coder]}; {header.lanes} rANS lanes; {step}; "
              f"format version {header.version}")  # fmt: skip

    return _for_each([spec for spec, _ in _expand_folders(args.files, (".mscm",))], info_one)


def cmd_export(args: argparse.Namespace) -> int:
    from mscm_jax.coding.codec import Codec

    # Else a float-path model, exported without a word.
    calibration = {"--calibration": args.calibration, "--calibration-images": args.calibration_images}
    _refuse_without("--integer", args.integer, calibration)
    out = Path(args.output)
    _refuse_existing(out, args.overwrite)
    codec = Codec.load(args.workdir)
    if args.integer:
        from mscm_jax.training.data import calibration_images

        source = args.calibration or "samples"
        images = calibration_images(source, args.calibration_images or 4)
        codec = codec.with_integer_path(images)
        print(f"integer path calibrated on {len(images)} images of {source}")
    size = codec.export(out)
    print(
        f"exported {args.workdir} (step {codec.step}) -> {out}: {size} bytes, "
        f"fingerprint {codec.fingerprint[:16]}"
    )
    if not args.no_store:
        _store_model(codec, str(out), args.workdir)
    return 0


def cmd_optimize_order(args: argparse.Namespace) -> int:
    import time

    from mscm_jax.tools.order_search import OrderScorer, model_latent_moments, reference_orders, search_order

    n, stages = args.patch, args.stages or args.patch**2
    if n < 1:
        raise UsageError(f"--patch must be >= 1, got {n}")
    if not 1 <= stages <= n * n:
        raise UsageError(f"--stages must be in 1..{n * n} for --patch {n}, got {stages}")
    start = time.perf_counter()
    moments, about = model_latent_moments(args.model, args.images, args.max_images, n)
    latent_seconds = time.perf_counter() - start
    scorer = OrderScorer(moments.covariance(), n, rate_model="discrete")
    found = search_order(scorer, stages)
    print(f"model: {about}")
    print(
        f"search ({n}x{n} patch, {stages} stages): {found.fits} fits (each {scorer.channels} channels), "
        f"{found.evaluations} pattern evaluations, {found.seconds:.2f} s; latents {latent_seconds:.1f} s"
    )
    print("estimated bits per latent element (linear predictor from visible 5x5 neighbours):")
    print(f"  {'found':<40}{found.bits:8.4f}")
    for name, pattern in reference_orders(n, stages):
        bits = scorer.score(pattern)
        change = f"{100 * (found.bits / bits - 1):+.2f} %" if bits > 0 else "n/a (no bits: all-zero latents?)"
        print(f"  {name:<40}{bits:8.4f}   found vs this: {change}")
    print(get_schedule(found.pattern.tolist()).draw())
    print("pattern (a schedule for config.model.schedule or get_schedule):")
    print(found.pattern_json())
    return 0


def cmd_import_torch(args: argparse.Namespace) -> int:
    import time

    from mscm_jax.coding.codec import MODEL_FILE_SUFFIX, Codec
    from mscm_jax.tools.torch_import import convert_state_dict, import_checkpoint, load_state_dict

    if args.output.endswith(MODEL_FILE_SUFFIX):  # one exported file instead of a workdir
        _refuse_existing(args.output, args.overwrite)
        start = time.perf_counter()
        config, params = convert_state_dict(args.arch, load_state_dict(args.checkpoint))
        codec = Codec(config, params, source=os.path.abspath(args.checkpoint))
        size = codec.export(args.output)
        seconds = time.perf_counter() - start
        print(
            f"imported {args.checkpoint} as {args.arch} (N={config.N}, M={config.M}, "
            f"K={config.num_mixtures}, schedule {config.schedule}) in {seconds:.1f} s "
            f"-> {args.output} ({size} bytes)"
        )
        if not args.no_store:
            _store_model(codec, args.output, args.checkpoint)
        return 0
    result = import_checkpoint(args.checkpoint, args.arch, args.output)
    c = result.config
    print(
        f"imported {args.checkpoint} as {args.arch} (N={c.N}, M={c.M}, K={c.num_mixtures}, "
        f"schedule {c.schedule}, rounding {c.rounding}): {result.num_params:,} parameters "
        f"in {result.seconds:.1f} s -> {result.workdir}"
    )
    gap = result.z_median_max_abs_diff
    print(f"z is rounded around the stored quantiles (max {gap:.2e} from the density's median)")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from mscm_jax.coding.model_store import ModelStore, listing_lines

    store = ModelStore()
    if args.action == "add":

        def add_one(path: str) -> None:
            entry, how = store.add(path)
            print(
                f"{path}: {entry.short} ({entry.describe()}, schedule {entry.schedule}) {how} in {store.root}"
            )

        return _for_each(args.paths, add_one)
    if args.action == "remove":
        for prefix in args.fingerprints:  # errors end the command: removal is not retried blindly
            entry = store.remove(prefix)
            print(f"removed {entry.short} ({entry.describe()}, {entry.schedule or '?'}) from {store.root}")
        return 0
    entries = store.entries()
    count = f"{len(entries)} model{'' if len(entries) == 1 else 's'}"
    print(f"{count} in {store.root} ($MSCM_JAX_MODELS to use another store)")
    if entries:
        print("\n".join(listing_lines(entries)))
    return 0


def add_import_torch_parser(sub) -> None:
    from mscm_jax.tools.torch_import import ARCHS

    p = sub.add_parser(
        "import-torch",
        help="import a published PyTorch checkpoint (CompressAI layout) into a workdir",
        epilog='Reading .pth needs PyTorch: pip install -e ".[torch]"; a .npz of the state dict needs none.',
    )
    p.add_argument("checkpoint", help="a .pth / .pth.tar state dict (or a .npz of one)")
    p.add_argument("--arch", required=True, choices=list(ARCHS))
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="a new workdir, or a MODEL.mscm-model file (then also added to the model store)",
    )
    p.add_argument("--no-store", action="store_true", help="do not add a .mscm-model output to the store")
    p.add_argument("--overwrite", action="store_true", help="replace an existing .mscm-model output")
    p.set_defaults(func=cmd_import_torch)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from mscm_jax.tools.evaluate import evaluate_models, load_images, summary_lines, write_results_json

    if bool(args.model) == bool(args.codec):
        what = "not both" if args.model else "one of them: what to evaluate"
        raise UsageError(f"give --model (repeatable) or --codec, {what}")
    _refuse_without("--codec", bool(args.codec), {"--qualities": args.qualities})
    _refuse_existing(args.output, args.overwrite)
    json_args = {"name": args.name}
    if args.codec:
        from mscm_jax.tools import baselines

        baselines.check_codec(args.codec)  # before loading images: a missing codec is one line
        images = load_images(args.images, args.max_images)
        qualities = args.qualities or baselines.DEFAULT_QUALITIES
        results = baselines.evaluate_baseline(args.codec, images, qualities, progress=not args.no_progress)
        json_args = {
            "name": args.name or baselines.CODECS[args.codec][1],
            "description": baselines.baseline_json_description(args.codec, results),
            "conventions": baselines.BASELINE_CONVENTIONS,
        }
    else:
        from mscm_jax.coding.programs import enable_compilation_cache

        enable_compilation_cache()
        images = load_images(args.images, args.max_images)
        results = evaluate_models(args.model, images, progress=not args.no_progress)
    print(f"{len(images)} images ({args.images}); averages over images, times in s:")
    print("\n".join(summary_lines(results)))
    if args.output:
        write_results_json(results, args.output, **json_args)
        print(f"wrote {args.output}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from mscm_jax.tools.plot import bd_rate_rows, bd_table_lines, find_anchor, load_curves, plot_rd

    curves = load_curves(args.results)
    anchor = find_anchor(curves, args.anchor)
    plot_rd(curves, args.output, title=args.title)
    print(f"wrote {args.output}: {len(curves)} curves, bpp vs PSNR-RGB and vs MS-SSIM-RGB (dB)")
    rows = bd_rate_rows(curves, anchor, args.method)
    print("\n".join(bd_table_lines(rows, curves[anchor].name, args.method)))
    return 0


def _count(text: str, least: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or value < least:
        raise argparse.ArgumentTypeError(f"takes an integer of at least {least}, got {text!r}")
    return value


def _tile_pixels(text: str) -> int:
    value = _count(text, 0)
    if not valid_tile_pixels(value):
        raise argparse.ArgumentTypeError(f"takes 0 (whole images) or at least {MIN_TILE_PIXELS}, got {value}")
    return value


def _add_tile_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--tile-pixels", type=_tile_pixels, default=DEFAULT_TILE_PIXELS, metavar="PIXELS",
        help=f"run the transforms in overlapping windows of at most PIXELS (default {DEFAULT_TILE_PIXELS}: "
        "a 3840x2160 image whole; 0: every image whole): less memory for large images, more computation",
    )  # fmt: skip


def _add_size_step_option(parser: argparse.ArgumentParser) -> None:
    from mscm_jax.coding.bitstream import MAX_SIZE_STEP, SIZE_STEP_UNIT, valid_size_step  # they import JAX
    from mscm_jax.coding.codec import DEFAULT_SIZE_STEP

    def size_step(text: str) -> int:
        value = _count(text, 0)
        if not valid_size_step(value):
            raise argparse.ArgumentTypeError(
                f"takes 0 or a multiple of {SIZE_STEP_UNIT} up to {MAX_SIZE_STEP}, got {value}"
            )
        return value

    parser.add_argument(
        "--size-step", type=size_step, default=DEFAULT_SIZE_STEP, metavar="PIXELS",
        help=f"images whose sides round up to the same multiples of PIXELS, a multiple of 64 (default "
        f"{DEFAULT_SIZE_STEP}), share the stage programs: fewer compilations for many sizes, up to one "
        "step's rows and columns computed and not coded; 0: programs of each size's own (files "
        "record it; decoders use the file's)",
    )  # fmt: skip


def _positive(text: str) -> int:
    return _count(text, 1)


def _non_negative(text: str) -> int:
    return _count(text, 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mscm-jax",
        description="Learned image compression with multistage spatial context models (JAX/Flax).",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("schedules", help="list the built-in decoding schedules and draw their patterns")
    p.add_argument("names", nargs="*", help="schedule names or JSON patterns (default: all built-in)")
    p.add_argument("--latent-channels", type=int, default=192, help="M for the parameter count")
    p.add_argument("--no-draw", action="store_true", help="only the table")
    p.set_defaults(func=cmd_schedules)

    p = sub.add_parser(
        "estimate",
        help="forward pass on one image: estimated bpp and PSNR, per schedule (untrained) or of a workdir",
    )
    p.add_argument("--image", default="astronaut", help="a sample photo name or an image path")
    p.add_argument("--model", default="", help="a training workdir (default: fresh models per schedule)")
    p.add_argument(
        "--schedules", nargs="+", default=["hyperprior", "checkerboard", "mscm2x2", "mscm4x4-paper"]
    )
    p.add_argument("--transform", default="mbt2018", choices=list(TRANSFORMS))
    p.add_argument("--channels", type=int, default=32, help="N = M")
    p.add_argument("--mixtures", type=int, default=3, help="K")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--integer", action="store_true", help="also code with the float and the integer path (needs --model)"
    )
    p.set_defaults(func=cmd_estimate)

    p = sub.add_parser(
        "train",
        help="train (or resume) a model from a launch config",
        epilog="Override any config field with --config.SECTION.KEY=VALUE, e.g. --config.train.batch_size=8.",
    )
    p.add_argument(
        "--config", required=True, help="launch file, PATH or PATH:ARG (e.g. launch/paper.py:mscm2x2,q3)"
    )
    p.add_argument("--workdir", required=True, help="run directory (local or gs://...); re-run to resume")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--distributed", action="store_true", help="multi-host: call jax.distributed.initialize")
    p.add_argument("--coordinator", default="", help="host:port of process 0 (default: auto-detect)")
    p.add_argument("--num-processes", type=int, default=None)
    p.add_argument("--process-id", type=int, default=None)
    p.add_argument("--init-timeout", type=int, default=300, help="seconds to wait for all processes")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("compress", help="code images into .mscm files")
    p.add_argument(
        "images",
        nargs="+",
        help="image files, folders (their PNG/JPEG files, recursively) or sample photo names",
    )
    p.add_argument("--model", required=True, help="a training workdir or an exported .mscm-model file")
    p.add_argument(
        "-o", "--output", default="", help="output file (one image) or folder (default: ./NAME.mscm)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--no-store", action="store_true",
                   help="do not add the model to the model store (decoding then needs --model)")  # fmt: skip
    p.add_argument("--lanes", type=int, default=None,
                   help="rANS lanes, 1-4096 (default: about sqrt(symbols) / 16): each costs about 3 bytes "
                        "per file; fewer make decoding less parallel")  # fmt: skip
    _add_tile_option(p)
    _add_size_step_option(p)
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("info", help="what .mscm files hold, from their headers: size, model, schedule, coder")
    p.add_argument("files", nargs="+", help=".mscm files or folders (their .mscm files, recursively)")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("decompress", help="decode .mscm files into PNG images")
    p.add_argument("files", nargs="+", help=".mscm files or folders (their .mscm files, recursively)")
    p.add_argument("--model", default="",
                   help="the model that wrote them (workdir or .mscm-model); default: found in the "
                        "model store by each file's fingerprint")  # fmt: skip
    p.add_argument(
        "-o", "--output", default="", help="output file (one input) or folder (default: ./NAME.png)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument(
        "--max-pixels", type=_positive, default=40_000_000, help="refuse files claiming larger images"
    )
    _add_tile_option(p)
    p.set_defaults(func=cmd_decompress)

    p = sub.add_parser(
        "export",
        help="write a training workdir's (or a model file's) model as one self-contained .mscm-model file",
    )
    p.add_argument("workdir")
    p.add_argument("-o", "--output", required=True, help="MODEL.mscm-model")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--no-store", action="store_true", help="do not add the file to the model store")
    p.add_argument(
        "--integer", action="store_true",
        help="add the integer entropy-parameter path (post-training, calibrated): files coded with "
        "the exported model decode on every backend",
    )  # fmt: skip
    p.add_argument("--calibration", help="with --integer, images to calibrate on: samples (default), "
                   "folder:PATH or tfds:NAME")  # fmt: skip
    p.add_argument("--calibration-images", type=_positive, help="with --integer, how many (centre crops "
                   "of 512 pixels; default 4)")  # fmt: skip
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "models",
        help="the local model store: list (default), add PATH, remove FINGERPRINT",
        epilog="The store is $MSCM_JAX_MODELS (default ~/.cache/mscm-jax/models); decompress finds "
        "models there by the fingerprint each .mscm file holds.",
    )
    p.set_defaults(func=cmd_models, action="list")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.add_parser("list", help="list the stored models")
    a = actions.add_parser("add", help="add models: training workdirs or .mscm-model files")
    a.add_argument("paths", nargs="+")
    a = actions.add_parser("remove", help="remove stored models by fingerprint (a unique prefix)")
    a.add_argument("fingerprints", nargs="+")

    p = sub.add_parser(
        "optimize-order", help="search the in-patch decoding order that minimizes the estimated rate"
    )
    p.add_argument(
        "--model", required=True, help="a training workdir whose analysis transform gives the latents"
    )
    p.add_argument("--patch", type=int, default=4, help="n for an n x n pattern")
    p.add_argument("--stages", type=int, default=0, help="number of stages (default n*n)")
    p.add_argument(
        "--images", default="samples", help="'samples' (built-in photos), an image file or a folder of images"
    )
    p.add_argument("--max-images", type=_non_negative, default=4, help="use the first N images (0: all)")
    p.set_defaults(func=cmd_optimize_order)

    add_import_torch_parser(sub)

    p = sub.add_parser(
        "evaluate",
        help="code images for real with each model (or a classical codec): bpp, PSNR, MS-SSIM, times",
    )
    p.add_argument("--model", action="append", default=[],
                   help="workdir or .mscm-model; repeat for the points of one RD curve")  # fmt: skip
    p.add_argument("--codec", default="", choices=["jpeg", "webp", "avif"],
                   help="a classical codec (through Pillow) instead of --model")  # fmt: skip
    p.add_argument("--qualities", type=int, nargs="+", default=None,
                   help="--codec qualities 0..100, one RD point each (default 5 10 20 ... 95)")  # fmt: skip
    p.add_argument(
        "--images", default="samples", help="samples, samples:SCENE,..., an image file or a folder of images"
    )
    p.add_argument("-o", "--output", default="", help="results JSON (CompressAI eval_model layout)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing results JSON")
    p.add_argument("--name", default="", help="the JSON's name (default: from the schedules)")
    p.add_argument("--max-images", type=_non_negative, default=0, help="use the first N images (0: all)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_evaluate)

    from mscm_jax.tools.bd_rate import METHODS

    p = sub.add_parser("plot", help="RD curves (bpp vs PSNR and MS-SSIM dB) of results JSONs and BD-rates")
    p.add_argument("results", nargs="+", help="evaluation results JSON files, one curve each")
    p.add_argument("-o", "--output", required=True, help="the figure (rd.png; .pdf or .svg work too)")
    p.add_argument("--anchor", default="", help="BD-rate anchor: a file or curve name (default: the first)")
    p.add_argument("--method", default="pchip", choices=list(METHODS), help="BD-rate interpolation")
    p.add_argument("--title", default="")
    p.set_defaults(func=cmd_plot)
    return parser


def _user_errors() -> tuple[type[Exception], ...]:
    """The errors that are the user's to fix, reported in one line; anything else (a bug, a JAX
    runtime failure) keeps its traceback. Evaluated only when an exception propagates, so that
    `decompress` does not import the training stack."""
    from mscm_jax.tools.torch_checkpoint import TorchMissingError
    from mscm_jax.training.train import TrainingError

    return UsageError, ScheduleError, ValueError, FileNotFoundError, TrainingError, TorchMissingError


def _print_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line for the command's user, without the source line that raised it."""
    print(f"warning: {message}", file=file or sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    overrides = [a for a in unknown if a.startswith("--config.")]
    rest = [a for a in unknown if not a.startswith("--config.")]
    if rest or (overrides and args.command != "train"):
        parser.error(f"unrecognized arguments: {' '.join(rest or overrides)}")
    args.overrides = overrides
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _print_warning
            return args.func(args)
    except _user_errors() as e:
        print(f"mscm-jax {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like, which stopped reading
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141


if __name__ == "__main__":
    sys.exit(main())
