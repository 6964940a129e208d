"""Benchmarks that print figures (speed goals live here, not in tests).

    python -m mscm_jax.tools.bench stages [--height 512 --width 768 --channels 192]
    python -m mscm_jax.tools.bench train-step [--schedules mscm4x4-paper checkerboard]
    python -m mscm_jax.tools.bench coding [--schedules hyperprior checkerboard ...]

`stages`: warm wall time of the entropy-parameter computation of *all* stages
of a schedule (context + parameter network, one jitted call per stage, as the
decoder runs them) on the latent of one image, for several schedules in one
run. Compilation is excluded and reported apart; the coder's own work and the
update of y_hat between stages are not included.

`coding`: real compress / decompress of one photo per schedule with the
codec, warm, in one run: encode time; decode time split into entropy decoding
(z, hyper-synthesis, every stage's parameters and coder), the part of it
spent outside compiled calls, and synthesis; the stages' networks alone
(timed in the encoder, which computes the same parameters without the
coder); the payload over its ideal
under the integer models; then the coder's throughput in symbols/s, with
CDFs computed in the loop and over materialized tables, next to
constriction's own on the same symbols and integer tables.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from mscm_jax.coding.bitstream import MAX_SIZE_STEP, SIZE_STEP_UNIT, valid_size_step
from mscm_jax.model.context import MultistageContext
from mscm_jax.model.entropy_models import GaussianMixtureConditional
from mscm_jax.model.schedules import ScheduleError, get_schedule
from mscm_jax.model.transforms import TRANSFORMS, spread_latents


def _flops(compiled) -> float:
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return float(cost.get("flops", float("nan")))


def bench_stages(
    schedules: list[str], height: int, width: int, channels: int, mixtures: int, repeats: int
) -> list[dict]:
    stride = TRANSFORMS["cheng2020-attn"].latent_stride  # the context model alone: a family's geometry
    latent = (-(-height // stride), -(-width // stride))
    out_channels = GaussianMixtureConditional(mixtures).num_parameter_channels(channels)
    rng = np.random.default_rng(0)
    y_hat = jnp.asarray(np.round(rng.normal(0, 3, (1, *latent, channels))), jnp.float32)
    hyper = jnp.asarray(rng.normal(0, 1, (1, *latent, 2 * channels)), jnp.float32)
    rows = []
    for name in schedules:
        schedule = get_schedule(name)
        module = MultistageContext(schedule, channels, out_channels)
        params = jax.jit(lambda k, y, h, module=module: module.init(k, y, h, method="all_stages"))(
            jax.random.PRNGKey(0), y_hat, hyper
        )
        fn = jax.jit(lambda p, s, y, h, k, module=module: module.apply(p, s, y, h, k, method="decode_stage"))
        plan = module.plan(*latent)
        # As a decoder does: split the per-stage context weights once, up front.
        kernels = module.apply(params, *latent, method="stage_kernels")
        # Stages read their own context taps (`stage_taps`): one compilation per tap count.
        compiled, compile_s = {}, 0.0
        for s, kernel in enumerate(kernels):
            shapes = tuple(a.shape for a in kernel)
            if shapes not in compiled:
                start = time.perf_counter()
                compiled[shapes] = fn.lower(params, jnp.int32(s), y_hat, hyper, kernel).compile()
                compile_s += time.perf_counter() - start
        shapes = [tuple(a.shape for a in k) for k in kernels]
        calls = [
            (compiled[sh], jnp.int32(s), k) for s, (sh, k) in enumerate(zip(shapes, kernels, strict=True))
        ]
        flops = {sh: _flops(c) for sh, c in compiled.items()}
        for call, s, kernel in calls:
            call(params, s, y_hat, hyper, kernel).block_until_ready()  # warm
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            for call, s, kernel in calls:
                # The decoder needs each stage's parameters before the next stage.
                call(params, s, y_hat, hyper, kernel).block_until_ready()
            times.append(time.perf_counter() - start)
        rows.append(
            {
                "schedule": name,
                "stages": plan.num_stages,
                "latent": latent,
                "median_s": float(np.median(times)),
                "min_s": float(np.min(times)),
                "compile_s": compile_s,
                "gflops_per_stage": float(np.mean([flops[sh] for sh in shapes])) / 1e9,
            }
        )
    return rows


def bench_train_step(transform: str, schedule: str, channels: int, batch: int, crop: int, steps: int) -> dict:
    """Warm train-step time of one configuration, in this process."""
    import resource

    from mscm_jax.model.compression_model import CompressionModel, ModelConfig
    from mscm_jax.training.configs import base_config
    from mscm_jax.training.train import init_state, make_train_step

    config = base_config()
    config.train.batch_size = batch
    model = CompressionModel(ModelConfig(transform=transform, N=channels, M=channels, schedule=schedule))
    state, tx = init_state(model, config.train, jax.random.PRNGKey(0), crop)
    step = jax.jit(make_train_step(model, tx, config.train), donate_argnums=0)
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(batch, crop, crop, 3)), jnp.float32)
    key = jax.random.PRNGKey(1)
    start = time.perf_counter()
    state, metrics = step(state, x, key)
    jax.block_until_ready(metrics)
    compile_and_first = time.perf_counter() - start
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = step(state, x, key)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    seconds = float(np.median(times))
    return {
        "schedule": schedule,
        "step_s": seconds,
        "images_per_s": batch / seconds,
        "first_step_s": compile_and_first,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def _spread_scales(params, channels: int, mixtures: int, low: float, high: float):
    """Sets the parameter network's scale biases to `low`..`high` (geometric) across channels.

    Random weights give every element the smallest scale, so every stage has
    one table width; a trained model's channels range from nearly
    deterministic to wide, so its stages have several widths, and the coder
    works in more, smaller groups.
    """
    dense = params["params"]["context"]["entropy_parameters"]["dense2"]
    scales = np.tile(np.geomspace(low, high, channels), mixtures)  # the first K*M outputs are scales
    dense["bias"] = jnp.asarray(dense["bias"]).at[: mixtures * channels].set(scales)
    return params


def _image_of_size(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """A centre crop of `image`, enlarged first (Lanczos) when it is smaller than asked."""
    from PIL import Image

    scale = max(height / image.shape[0], width / image.shape[1])
    if scale > 1:
        size = (int(np.ceil(image.shape[1] * scale)), int(np.ceil(image.shape[0] * scale)))
        image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))
    top, left = (image.shape[0] - height) // 2, (image.shape[1] - width) // 2
    return image[top : top + height, left : left + width]


def _entropy_decoding_runs(codecs: dict, files: dict, repeats: int) -> dict[str, list[float]]:
    """Seconds of entropy decoding alone of each codec's file, `repeats` short runs each, taking turns.

    A decode without the synthesis takes a tenth of the time, so many runs fit
    where a few whole decodes did, close together: the ratio of two runs next
    to each other, and that of the fastest runs (other tenants of a shared
    machine only ever add time), estimate the code's own cost far better.
    """
    seconds = {name: [] for name in codecs}
    for _ in range(repeats):
        for name, codec in codecs.items():
            seconds[name].append(codec.decode_latent(files[name])[1].entropy_coding)
    return seconds


def _ratio(numerator: list[float], denominator: list[float]) -> dict:
    """The per-run ratios (runs of the same turn paired), their median and range, and the ratio
    of the fastest runs."""
    ratios = [a / b for a, b in zip(numerator, denominator, strict=True)]
    fastest = [min(numerator), min(denominator)]
    return {"median": float(np.median(ratios)), "low": min(ratios), "high": max(ratios),
            "per_repeat": ratios, "fastest_s": fastest, "fastest": fastest[0] / fastest[1]}  # fmt: skip


def _print_ratio(what: str, ratio: dict, repeats: int) -> None:
    print(
        f"{what}, entropy decoding alone (`Codec.decode_latent`), {repeats} runs each, taking turns: "
        f"median of the ratios {ratio['median']:.2f} ({ratio['low']:.2f}-{ratio['high']:.2f}); "
        f"fastest runs {ratio['fastest_s'][0]:.3f} / {ratio['fastest_s'][1]:.3f} s = {ratio['fastest']:.2f}"
    )


def bench_coding(args: argparse.Namespace) -> dict:
    """Prints the `coding` table and returns its figures: {"schedules": {name: row}, "coder": ..., ...}.

    The schedules take turns within each repeat, so that the machine's drift
    during the run (10-30 % on a shared 2-core VM) falls on all of them alike;
    the 4x4 / checkerboard ratio is the median of the per-repeat ratios.
    """
    import resource

    from mscm_jax.coding.codec import Codec
    from mscm_jax.model.compression_model import ModelConfig, init_model
    from mscm_jax.training.data import calibration_images, load_image

    image = _image_of_size(load_image(args.image), args.height, args.width)
    spread = "; scales {:g}-{:g} across channels".format(*args.scale_spread) if args.scale_spread else ""
    print(
        f"# jax {jax.__version__} on {jax.devices()[0].platform} ({os.cpu_count()} cpus); {args.transform}, "
        f"N=M={args.channels}, K={args.mixtures}; {args.image} (centre crop, enlarged if smaller) "
        f"{args.width}x{args.height}; random weights, g_a output x{args.latent_scale}{spread}; "
        f"median of {args.repeats} warm runs, schedules taking turns; seconds"
    )
    codecs, compile_s = {}, {}
    for name in args.schedules:
        config = ModelConfig(transform=args.transform, N=args.channels, M=args.channels,
                             num_mixtures=args.mixtures, schedule=name)  # fmt: skip
        _, params = init_model(config, jax.random.PRNGKey(0))
        params = spread_latents(params, args.transform, args.latent_scale)
        if args.scale_spread:
            params = _spread_scales(params, args.channels, args.mixtures, *args.scale_spread)
        codecs[name] = Codec(config, params, size_step=args.size_step)
        if args.integer:  # the same model with its integer path (calibrated on the sample photos)
            codecs[f"{name}+int"] = codecs[name].with_integer_path(calibration_images("samples", 2, 256))
    for name, codec in codecs.items():
        encoded = codec.compress(image)  # compiles
        compile_s[name] = encoded.timings.compile + codec.decompress(encoded.data).timings.compile
    runs, y_hats, files = {name: [] for name in codecs}, {}, {}
    for _ in range(args.repeats):
        for name, codec in codecs.items():
            start = time.perf_counter()
            encoded = codec.compress(image)
            y_hats[name], files[name] = encoded.y_hat, encoded.data
            encode_s = time.perf_counter() - start
            start = time.perf_counter()
            t = codec.decompress(encoded.data).timings
            decode_s = time.perf_counter() - start
            runs[name].append({"bpp": encoded.bpp, "encode_s": encode_s, "decode_s": decode_s,
                               "entropy_decoding_s": t.entropy_coding, "stages_s": sum(t.stages),
                               "parameters_s": encoded.timings.parameters,
                               "outside_s": t.outside, "synthesis_s": t.synthesis,
                               "overhead": 8 * encoded.payload_bytes / encoded.ideal_bits - 1})  # fmt: skip
    header = ("schedule", "bpp", "encode", "decode", "entropy dec", "of it stages", "networks", "outside",
              "synthesis", "compile", "payload/ideal")  # fmt: skip
    print("{:<15}{:>8}{:>9}{:>9}{:>13}{:>14}{:>10}{:>9}{:>11}{:>9}{:>15}".format(*header))
    rows = {}
    for name, name_runs in runs.items():
        row = {key: float(np.median([r[key] for r in name_runs])) for key in name_runs[0]}
        rows[name] = {**row, "compile_s": compile_s[name]}
        print(
            f"{name:<15}{row['bpp']:>8.3f}{row['encode_s']:>9.3f}{row['decode_s']:>9.3f}"
            f"{row['entropy_decoding_s']:>13.3f}{row['stages_s']:>14.3f}{row['parameters_s']:>10.3f}"
            f"{row['outside_s']:>9.3f}"
            f"{row['synthesis_s']:>11.3f}{compile_s[name]:>9.1f}{1 + row['overhead']:>15.4f}"
        )
    report = {"schedules": rows}

    def whole_runs(numerator: str, denominator: str, seconds=lambda r: r["entropy_decoding_s"]) -> dict:
        return _ratio([seconds(r) for r in runs[numerator]], [seconds(r) for r in runs[denominator]])

    if "checkerboard" in runs and "mscm4x4-paper" in runs:
        ratio = report["ratio_4x4_checkerboard"] = whole_runs("mscm4x4-paper", "checkerboard")
        print(
            f"entropy decoding mscm4x4-paper / checkerboard: {ratio['median']:.2f} "
            f"(median of {args.repeats} repeats; {ratio['low']:.2f}-{ratio['high']:.2f})"
        )
        # Where the difference lies: the stages' networks (timed in the encoder, which runs
        # them without the coder) and the rest of entropy decoding (z, hyper-synthesis, coder).
        parts = {"networks": lambda r: r["parameters_s"],
                 "the rest": lambda r: r["entropy_decoding_s"] - r["parameters_s"]}  # fmt: skip
        for part, seconds in parts.items():
            split = whole_runs("mscm4x4-paper", "checkerboard", seconds)
            ratio[part] = split["median"]
            print(f"  of it {part}: {split['median']:.2f} ({split['low']:.2f}-{split['high']:.2f})")
    for name in [n for n in runs if f"{n}+int" in runs]:
        ratio = report.setdefault("ratio_integer_float", {})[name] = whole_runs(f"{name}+int", name)
        print(f"entropy decoding {name}, integer path / float path: {ratio['median']:.2f} "
              f"({ratio['low']:.2f}-{ratio['high']:.2f})")  # fmt: skip
    short = _entropy_decoding_runs(codecs, files, args.entropy_repeats)
    pairs = [("mscm4x4-paper", "checkerboard")] + [(f"{n}+int", n) for n in runs if f"{n}+int" in runs]
    for numerator, denominator in pairs:
        if numerator in short and denominator in short:
            ratio = _ratio(short[numerator], short[denominator])
            report.setdefault("entropy_decoding_alone", {})[f"{numerator} / {denominator}"] = ratio
            _print_ratio(f"{numerator} / {denominator}", ratio, args.entropy_repeats)
    if args.throughput_schedule in codecs:
        rates = _coder_throughput(codecs[args.throughput_schedule], image)
        report["coder"] = {"schedule": args.throughput_schedule, **rates}
        theirs = (
            f"{rates['constriction']:,.0f}" if np.isfinite(rates["constriction"])
            else "not measured, constriction is not installed (pip install 'mscm-jax[bench]')"
        )  # fmt: skip
        print(
            f"coder, {args.throughput_schedule}, {rates['symbols']} y symbols, {rates['lanes']} lanes, "
            f"decode in symbols/s: ours "
            f"(CDFs computed in the loop) {rates['lazy']:,.0f}; ours over materialized tables (130 CDF "
            f"values per element first) {rates['materialized']:,.0f}; constriction alone on the same "
            f"integer tables {theirs}"
        )
    report["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"peak RSS {report['peak_rss_gib']:.2f} GiB")
    return report


def _coder_throughput(codec, image: np.ndarray) -> dict:
    """Decode rates (symbols/s) of every y symbol of `image`, each stage's integer models given.

    Each stage's time is the fastest of three runs, for each decoder.

    Three decoders of the same symbols: ours as the codec runs it (CDF values
    computed on the fly inside the rANS loop), ours over materialized tables
    (every element's 130 CDF values computed first, in one vectorized call,
    then looked up), and constriction's range decoder alone on the same
    integer tables (built beforehand, one call per table width; no escapes).
    """
    from mscm_jax.coding import integer_cdf, rans

    try:
        import constriction
    except ImportError:
        constriction = None  # an optional comparison: pip install "mscm-jax[bench]"

    lanes, stages = codec.stage_models(image)  # each stage's models and symbols, as the encoder has them
    lazy = jax.jit(
        lambda words, params: rans.decode_segment(
            rans.new_decoder(words, lanes), words, params, integer_cdf.mixture_cdf, integer_cdf.half_widths
        )[1]
    )

    def table_cdf(model, edge):  # model rows: log2 T, then the 130 CDF values
        if edge.ndim == 1:
            return jnp.take_along_axis(model[1:], edge[None], axis=0)[0]
        return jnp.take_along_axis(model[1:], edge, axis=0)

    def materialized(words, params):
        tables = integer_cdf.mixture_cdf(
            params, jnp.arange(2 * integer_cdf.MAX_HALF_WIDTH + 2)[:, None]
        )  # (130, E)
        models = jnp.concatenate([params[1:2], tables])
        return rans.decode_segment(
            rans.new_decoder(words, lanes), words, models, table_cdf, lambda m: 1 << m[0]
        )[1]

    materialized = jax.jit(materialized)
    encode = jax.jit(
        lambda params, symbols: rans.flush(
            rans.encode_segment(
                rans.new_encoder(lanes, rans.max_words(symbols.shape[0])),
                symbols,
                params,
                integer_cdf.mixture_cdf,
                integer_cdf.half_widths,
            )
        )
    )
    seconds = {"lazy": 0.0, "materialized": 0.0, "constriction": 0.0}
    count = 0
    for params, symbols, n in stages:
        params, symbols = params[:, :n], symbols[:n]
        buffer, first = encode(params, symbols)
        words = jnp.asarray(np.asarray(buffer)[int(first) :])
        for name, fn in (("lazy", lazy), ("materialized", materialized)):
            decoded = jax.block_until_ready(fn(words, params))  # compile
            if not np.array_equal(np.asarray(decoded), np.asarray(symbols)):
                raise RuntimeError(f"{name} decoder: wrong symbols (bench bug)")
            seconds[name] += _fastest(fn, words, params)
        count += int(n)
        if constriction is None:
            continue
        # constriction: the same integer tables as probabilities, grouped by width, decoded in one call each.
        tables = np.asarray(
            integer_cdf.mixture_cdf(params, jnp.arange(2 * integer_cdf.MAX_HALF_WIDTH + 2)[:, None])
        ).T
        host_params, host_symbols = np.asarray(params), np.asarray(symbols)
        widths = 1 << host_params[1]
        calls, encoder = [], constriction.stream.queue.RangeEncoder()
        for t in np.unique(widths):
            index = np.flatnonzero(widths == t)
            pmf = np.diff(tables[index, : 2 * t + 2], axis=1).astype(np.float32) / integer_cdf.TOTAL
            pmf = np.ascontiguousarray(pmf)
            bins = (np.clip(host_symbols[index], -t, t) + t).astype(np.int32)
            model = constriction.stream.model.Categorical(perfect=False)
            encoder.encode(bins, model, pmf)
            calls.append((model, pmf))
        compressed = encoder.get_compressed()

        def decode_all(compressed, calls):
            decoder = constriction.stream.queue.RangeDecoder(compressed)
            for model, pmf in calls:
                decoder.decode(model, pmf)

        seconds["constriction"] += _fastest(decode_all, compressed, calls)
    rates = {name: count / s if s else float("nan") for name, s in seconds.items()}
    return rates | {"symbols": count, "lanes": lanes}


def _fastest(run: Callable, *args, runs: int = 3) -> float:
    """Seconds of the fastest of `runs` calls of `run(*args)`: a shared machine only ever adds time."""
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        jax.block_until_ready(run(*args))
        seconds.append(time.perf_counter() - start)
    return min(seconds)


def build_parser() -> argparse.ArgumentParser:
    """The `python -m mscm_jax.tools.bench` command line (experiments reuse its `coding` arguments)."""
    parser = argparse.ArgumentParser(
        prog="python -m mscm_jax.tools.bench", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="bench", required=True)
    p = sub.add_parser("stages", help="entropy-parameter time of all stages per schedule")
    p.add_argument("--schedules", nargs="+", default=["checkerboard", "mscm2x2", "mscm4x4", "serial"])
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--channels", type=int, default=192, help="M")
    p.add_argument("--mixtures", type=int, default=3, help="K")
    p.add_argument("--repeats", type=int, default=5)
    p = sub.add_parser("train-step", help="train-step throughput and peak host memory per schedule")
    p.add_argument("--schedules", nargs="+", default=["mscm4x4-paper", "checkerboard"])
    p.add_argument("--transform", default="cheng2020-attn")
    p.add_argument("--channels", type=int, default=192, help="N = M")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--in-process", action="store_true", help=argparse.SUPPRESS)
    p = sub.add_parser("coding", help="real encode / decode time per schedule, and coder throughput")
    p.add_argument(
        "--schedules", nargs="+", default=["hyperprior", "checkerboard", "mscm2x2", "mscm4x4-paper", "serial"]
    )
    p.add_argument("--transform", default="cheng2020-attn")
    p.add_argument("--channels", type=int, default=192, help="N = M")
    p.add_argument("--mixtures", type=int, default=3, help="K")
    p.add_argument("--image", default="hubble_deep_field", help="a sample photo or image file, cropped")
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--latent-scale", type=float, default=40.0)
    p.add_argument("--scale-spread", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="scales LOW..HIGH across channels: several table widths per stage, as trained "
                   "models have (default: random weights' single width)")  # fmt: skip
    p.add_argument(
        "--entropy-repeats",
        type=int,
        default=30,
        help="runs of entropy decoding alone per codec, for the 4x4 / checkerboard and integer / float "
        "ratios",
    )
    p.add_argument("--throughput-schedule", default="mscm4x4-paper")
    p.add_argument("--size-step", type=int, default=0, metavar="PIXELS",
                   help="run the stage programs on the latent of the image's sides rounded up to multiples "
                   "of PIXELS (`Codec.with_size_step`; default 0: the image's own)")  # fmt: skip
    p.add_argument("--integer", action="store_true",
                   help="also each schedule with its integer entropy-parameter path (NAME+int)")  # fmt: skip
    return parser


# Every count and size a benchmark takes: a positive integer.
POSITIVE_ARGUMENTS = ("height", "width", "channels", "mixtures", "repeats", "batch", "crop", "steps",
                      "entropy_repeats")  # fmt: skip


def check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Bad arguments as one line naming what is accepted, before anything is built or timed."""
    for name in POSITIVE_ARGUMENTS:
        value = getattr(args, name, 1)
        if value < 1:
            parser.error(f"--{name.replace('_', '-')} takes a positive integer, got {value}")
    for spec in [*args.schedules, getattr(args, "throughput_schedule", "checkerboard")]:
        try:
            get_schedule(spec)
        except ScheduleError as e:
            parser.error(str(e))
    if getattr(args, "transform", "mbt2018") not in TRANSFORMS:
        parser.error(f"--transform takes one of {', '.join(TRANSFORMS)}, got {args.transform!r}")
    step = getattr(args, "size_step", 0)
    if not valid_size_step(step):
        parser.error(f"--size-step takes 0 or a multiple of {SIZE_STEP_UNIT} to {MAX_SIZE_STEP}, got {step}")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_arguments(parser, args)
    if getattr(args, "scale_spread", None) and min(args.scale_spread) <= 0:
        parser.error(f"--scale-spread takes two positive scales, got {args.scale_spread}")
    if args.bench == "coding":
        bench_coding(args)
        return 0
    if args.bench == "train-step":
        return _train_step_main(args)

    machine = platform.processor() or platform.machine()
    print(
        f"# jax {jax.__version__} on {jax.devices()[0].platform} ({machine}, {os.cpu_count()} cpus); "
        f"image {args.height}x{args.width}, M={args.channels}, K={args.mixtures}"
    )
    rows = bench_stages(args.schedules, args.height, args.width, args.channels, args.mixtures, args.repeats)
    base = next((r for r in rows if r["schedule"] == "checkerboard"), None)
    header = ("schedule", "stages", "median s", "min s", "vs cb", "GFLOP/stage", "compile s")
    print("{:<16}{:>7}{:>10}{:>9}{:>7}{:>13}{:>11}".format(*header))
    for r in rows:
        ratio = f"{r['median_s'] / base['median_s']:.2f}" if base else "-"
        print(
            f"{r['schedule']:<16}{r['stages']:>7}{r['median_s']:>10.4f}{r['min_s']:>9.4f}{ratio:>7}"
            f"{r['gflops_per_stage']:>13.4f}{r['compile_s']:>11.2f}"
        )
    return 0


def _train_step_main(args: argparse.Namespace) -> int:
    """Each schedule in its own process, so that peak memory is its own."""
    import json
    import subprocess
    import sys

    if args.in_process:
        row = bench_train_step(
            args.transform, args.schedules[0], args.channels, args.batch, args.crop, args.steps
        )
        print(json.dumps(row))
        return 0
    print(
        f"# jax {jax.__version__} on {jax.devices()[0].platform} ({os.cpu_count()} cpus); {args.transform}, "
        f"N=M={args.channels}, batch {args.batch}, {args.crop}x{args.crop}, median of {args.steps} warm steps"
    )
    header = ("schedule", "step s", "images/s", "first step s", "peak RSS GiB")
    print("{:<16}{:>9}{:>10}{:>14}{:>14}".format(*header))
    for schedule in args.schedules:
        cmd = [sys.executable, "-m", "mscm_jax.tools.bench", "train-step", "--in-process",
               "--schedules", schedule,
               "--transform", args.transform, "--channels", str(args.channels), "--batch", str(args.batch),
               "--crop", str(args.crop), "--steps", str(args.steps)]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(
            f"{r['schedule']:<16}{r['step_s']:>9.2f}{r['images_per_s']:>10.2f}"
            f"{r['first_step_s']:>14.1f}{r['peak_rss_gib']:>14.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
