"""On-device entropy coding on a GPU: every figure the on-device coding work asks of one, in one run.

    PYTHONUNBUFFERED=1 python experiments/gpu_coding.py [--small] [--out results.json]

1. Entropy decoding (z, hyper-synthesis, every stage: parameters, integer
   CDFs and rANS decoding, on the device) of a 512x768 image per schedule,
   cheng2020-attn N = M = 192, K = 3, random weights with latents and scales
   spread as `python -m mscm_jax.tools.bench coding --scale-spread 0.2 8` spreads them.
2. mscm4x4-paper at 512x768 (32 and 256 lanes) and 3840x2160 with z and
   each y stage decoded in one Pallas (Triton) kernel
   (`Codec(decode_kernel=True)`, `rans_kernel`): a whole loop in one launch.
   A failure there is printed and ends nothing.
3. mscm4x4-paper at 3840x2160 with the XLA loops.
4. The same integer parameters give the same CDFs on the GPU and on the CPU.
5. A file encoded on the GPU, decoded on the CPU (float networks on both:
   expected to fail; the integer path's files are `gpu_cross_device.py`'s).
6. Where mscm4x4-paper's entropy decoding goes: the device's operations over
   three warm decodes, by total time and calls per decode (`jax.profiler`),
   to tell the coder loop's per-step kernels from each stage's fixed cost.
7. mscm4x4-paper at 512x768 with more rANS lanes: decode time against the
   payload's overhead over the ideal (flush bytes), the trade-off that picks L;
   then with several coder steps per loop iteration (`Codec(unroll=...)`, the
   same bytes), which saves the loop's per-iteration cost instead.
8. The decode kernel alone on mscm4x4-paper's last stage (32 and 256 lanes)
   on 1, 4 and 8 warps: microseconds per loop step, the figure that picks
   `rans_kernel.warps_for` (`kernel_compile.py` has the registers of each).
9. The mscm4x4-paper row again in a new process under each of `XLA_VARIANTS`:
   XLA's command buffers (CUDA graphs) for while loops and conditionals,
   which would take the loop's per-step launches and its host round trip of
   the loop condition off the critical path.

The most telling rows come first, so that a run cut short keeps them.
`--small` runs the same code on tiny shapes (a check on a CPU-only machine).
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from mscm_jax.coding import integer_cdf, rans, rans_kernel
from mscm_jax.coding.codec import Codec
from mscm_jax.model.compression_model import ModelConfig, init_model
from mscm_jax.model.transforms import spread_latents
from mscm_jax.tools.bench import _image_of_size, _spread_scales
from mscm_jax.training.data import load_sample


def _codec(schedule: str, channels: int, lanes: int | None = None, device=None, unroll: int = 1,
           decode_kernel: bool = False) -> Codec:  # fmt: skip
    config = ModelConfig(
        transform="cheng2020-attn", N=channels, M=channels, num_mixtures=3, schedule=schedule
    )
    with jax.default_device(device or jax.devices()[0]):
        _, params = init_model(config, jax.random.PRNGKey(0))
        params = _spread_scales(spread_latents(params, config.transform, 40.0), channels, 3, 0.2, 8.0)
        # size_step=0: the image's own latent, so that 3840x2160 is timed without a bucket's extra rows.
        return Codec(config, params, lanes=lanes, unroll=unroll, decode_kernel=decode_kernel, size_step=0)


def _decode_row(codec: Codec, image: np.ndarray, repeats: int) -> dict:
    start = time.perf_counter()
    encoded = codec.compress(image)
    codec.decompress(encoded.data)
    first = time.perf_counter() - start
    runs = [codec.decompress(encoded.data).timings for _ in range(repeats)]
    median = lambda f: float(np.median([f(t) for t in runs]))  # noqa: E731
    return {
        "schedule": codec.schedule.name, "lanes": encoded.lanes, "unroll": codec.unroll,
        "decode_kernel": codec.decode_kernel, "bpp": encoded.bpp,
        "payload_bytes": encoded.payload_bytes, "ideal_bytes": encoded.ideal_bits / 8,
        "flush_bytes": encoded.flush_bytes, "lane_bytes": encoded.lane_bits / 8,
        "overhead": 8 * encoded.payload_bytes / encoded.ideal_bits - 1,
        "entropy_decoding_s": median(lambda t: t.entropy_coding), "hyper_s": median(lambda t: t.hyper),
        "stages_s": median(lambda t: sum(t.stages)), "outside_s": median(lambda t: t.outside),
        "synthesis_s": median(lambda t: t.synthesis), "first_call_s": first,
    }  # fmt: skip


# Extra XLA flags for the mscm4x4-paper row, each run in a new process (XLA reads them at start).
XLA_VARIANTS = (
    "--xla_gpu_enable_command_buffer=FUSION,CUBLAS,CUBLASLT,CUSTOM_CALL,WHILE,CONDITIONAL "
    "--xla_gpu_graph_min_graph_size=1",
)


def _profile_summary(codec: Codec, data: bytes, calls: int = 3, top: int = 25) -> list[str]:
    """The operations of `calls` warm entropy decodes (`decode_latent`), by total time.

    A device's planes when it has any (GPU kernels and copies), else the CPU
    runtime's XLA threads; per operation: ms and calls per decode.
    """
    codec.decode_latent(data)
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir):
            for _ in range(calls):
                codec.decode_latent(data)
        (path,) = glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True)
        profile = jax.profiler.ProfileData.from_file(path)
    planes = [p for p in profile.planes if p.name.startswith("/device:")]
    on_device = bool(planes)
    totals = collections.defaultdict(lambda: [0, 0])  # (line, operation) -> [count, ns]
    for plane in planes or [p for p in profile.planes if p.name == "/host:CPU"]:
        for line in plane.lines:
            if not on_device and not line.name.startswith("tf_XLA"):
                continue
            for event in line.events:
                if event.name.startswith("ThunkExecutor"):  # the CPU runtime's, around the operations
                    continue
                total = totals[line.name if on_device else "XLA's threads", event.name]
                total[0], total[1] = total[0] + 1, total[1] + event.duration_ns
    per_line = collections.defaultdict(lambda: [0, 0])  # a device's lines (streams, ops) overlap
    for (line, _), (count, ns) in totals.items():
        per_line[line][0], per_line[line][1] = per_line[line][0] + count, per_line[line][1] + ns
    lines = [f"{line}: {ns / 1e6 / calls:.1f} ms, {count / calls:.0f} events per decode"
             for line, (count, ns) in per_line.items()]  # fmt: skip
    for (line, name), (count, ns) in sorted(totals.items(), key=lambda kv: -kv[1][1])[:top]:
        lines.append(f"  {ns / 1e6 / calls:9.3f} ms {count / calls:8.0f} x  {line}: {name[:100]}")
    return lines


def _variant_row(flags: str, small: bool, repeats: int) -> dict | None:
    """The mscm4x4-paper row in a new process with `flags` added to XLA_FLAGS; None if it failed."""
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, __file__, "--row-only", f"--repeats={repeats}", f"--out={out}/row.json"]
        env = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {flags}".strip()}
        try:
            done = subprocess.run(command + ["--small"] * small, env=env, timeout=300, check=False)
        except subprocess.TimeoutExpired:
            print(f"XLA_FLAGS={flags}: no row after 300 s", flush=True)
            return None
        if done.returncode:
            print(f"XLA_FLAGS={flags}: exit status {done.returncode}", flush=True)
            return None
        with open(f"{out}/row.json") as f:
            return {**json.load(f)["rows"][0], "xla_flags": flags}


def _kernel_step_line(words, models, symbols, count: int, lanes: int, warps: int, repeats: int) -> str:
    """One stage's symbols decoded by the kernel alone on `warps` warps: fastest run, us per step."""

    def run(words, models):
        state = rans.new_decoder(words, lanes)
        return rans_kernel.decode_mixture_segment(state, words, models, count, num_warps=warps)[1]

    decode = jax.jit(run)
    same = np.array_equal(np.asarray(decode(words, models))[:count], np.asarray(symbols)[:count])
    seconds = []
    for _ in range(max(repeats, 3)):
        start = time.perf_counter()
        jax.block_until_ready(decode(words, models))
        seconds.append(time.perf_counter() - start)
    return (f"kernel alone, {count} symbols, {lanes} lanes, {warps} warps: {1e3 * min(seconds):.2f} ms, "
            f"{1e6 * min(seconds) / -(-count // lanes):.2f} us per step, "
            f"symbols {'the same' if same else 'DIFFERENT'}")  # fmt: skip


def _kernel_step_rows(codec: Codec, image: np.ndarray, repeats: int) -> list[str]:
    """The decode kernel on the codec's last stage alone, coded with 32 and 256 lanes, on 1, 4, 8 warps."""
    _, stages = codec.stage_models(image)
    models, symbols, count = stages[-1]
    lines = []
    for lanes in (32, 256):
        encoder = rans.new_encoder(lanes, rans.max_words(int(count)))
        encoder = rans.encode_segment(encoder, symbols, models, integer_cdf.mixture_cdf,
                                      integer_cdf.half_widths, count)  # fmt: skip
        buffer, first = rans.flush(encoder)
        words = buffer[int(first) :]
        for warps in (1, 4, 8):
            try:
                line = _kernel_step_line(words, models, symbols, int(count), lanes, warps, repeats)
            except Exception as e:  # one configuration that fails must not end the run
                line = f"kernel alone, {lanes} lanes, {warps} warps: failed: {type(e).__name__}: {e}"[:2000]
            print(line, flush=True)
            lines.append(line)
    return lines


def _print(row: dict) -> None:
    print(
        f"{row['schedule']:<14} {row.get('size', ''):>10} L={row['lanes']:<5} U={row['unroll']:<3} "
        f"{'kernel ' if row.get('decode_kernel') else ''}"
        f"bpp {row['bpp']:.3f}  "
        f"entropy decoding {1e3 * row['entropy_decoding_s']:8.1f} ms "
        f"(hyper {1e3 * row['hyper_s']:.1f}, stages "
        f"{1e3 * row['stages_s']:.1f}, outside compiled calls {1e3 * row['outside_s']:.1f})  synthesis "
        f"{1e3 * row['synthesis_s']:.1f} ms  payload {row['payload_bytes']} B "
        f"= ideal {row['ideal_bytes']:.0f} "
        f"x {1 + row['overhead']:.4f} (lanes {row['lane_bytes']:.0f} of {row['flush_bytes']} B)  "
        f"first call {row['first_call_s']:.0f} s",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--out", default="")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--row-only", action="store_true", help="only the mscm4x4-paper row (section 7)")
    args = parser.parse_args()
    channels, (h, w), (bh, bw) = (16, (64, 96), (128, 192)) if args.small else (192, (512, 768), (2160, 3840))
    photo = load_sample("astronaut")
    image, big = _image_of_size(photo, h, w), _image_of_size(photo, bh, bw)
    print(
        f"# jax {jax.__version__}, {jax.devices()[0].device_kind}; cheng2020-attn N=M={channels}, K=3, "
        f"random weights (latents x40, scales 0.2-8); median of {args.repeats} warm decodes",
        flush=True,
    )
    report = {"device": jax.devices()[0].device_kind, "jax": jax.__version__, "rows": []}

    def save():  # after every row, so that a run cut short keeps what it measured
        if args.out:
            with open(args.out, "w") as f:
                json.dump(report, f, indent=1)

    def record(row, size):
        row["size"] = size
        report["rows"].append(row)
        _print(row)
        save()

    if args.row_only:
        record(_decode_row(_codec("mscm4x4-paper", channels), image, args.repeats), f"{w}x{h}")
        return
    for schedule in ("checkerboard", "mscm4x4-paper"):
        record(_decode_row(_codec(schedule, channels), image, args.repeats), f"{w}x{h}")
    # z and y's stages decoded in one Pallas kernel each (Triton; `Codec(decode_kernel=True)`): first,
    # so that a run cut short still has them.
    kernel_rows = ((f"{w}x{h}", image, None, args.repeats), (f"{w}x{h}", image, 256, args.repeats),
                   (f"{bw}x{bh}", big, None, 1))  # fmt: skip
    for size, picture, lanes, repeats in kernel_rows:
        try:
            kernel = _codec("mscm4x4-paper", channels, lanes, decode_kernel=True)
            record(_decode_row(kernel, picture, repeats), size)
        except Exception as e:  # a kernel that does not compile here must not end the run
            print(f"decode kernel, {size}: failed: {type(e).__name__}: {str(e)[:2000]}", flush=True)
            report.setdefault("kernel_errors", []).append(f"{size}: {type(e).__name__}: {e}")
    record(_decode_row(_codec("mscm4x4-paper", channels), big, max(args.repeats // 2, 1)), f"{bw}x{bh}")
    report["kernel_steps"] = _kernel_step_rows(_codec("mscm4x4-paper", channels), image, args.repeats)
    save()

    # Integer CDFs: the same parameters on this device and on the CPU.
    rng = np.random.default_rng(0)
    means = rng.normal(0, 4, (3, 200_000)).astype(np.float32)
    scales = np.exp(rng.uniform(np.log(0.05), np.log(400), (3, 200_000))).astype(np.float32)
    weights = rng.dirichlet(np.ones(3), 200_000).T.astype(np.float32)
    cpu = jax.devices("cpu")[0]
    with jax.default_device(cpu):
        params = integer_cdf.quantize_parameters(*map(jnp.asarray, (means, scales, weights)), True)
    all_edges = jax.jit(lambda p: integer_cdf.mixture_cdf(p, jnp.arange(130)[:, None]))
    on_cpu = np.asarray(all_edges(jax.device_put(params, cpu)))
    on_device = np.asarray(all_edges(jax.device_put(params, jax.devices()[0])))
    mismatches = int(np.sum(on_cpu != on_device))
    report["cdf_mismatches"] = mismatches
    print(f"integer CDFs, {on_cpu.size} values of 200000 random elements: {mismatches} differ between "
          f"{jax.devices()[0].platform} and cpu", flush=True)  # fmt: skip

    # A file encoded here, decoded on the CPU.
    encoder = _codec("mscm4x4-paper", channels)
    data = encoder.compress(image).data
    decoder = _codec("mscm4x4-paper", channels, device=cpu)
    try:
        with jax.default_device(cpu):
            decoder.decompress(data)
        outcome = "decodes"
    except ValueError as e:
        outcome = f"fails: {e}"
    report["gpu_file_on_cpu"] = outcome
    print(f"512x768 file encoded on {jax.devices()[0].platform}, decoded on cpu: {outcome}", flush=True)

    print(f"mscm4x4-paper {w}x{h}, entropy decoding (`decode_latent`), operations per decode:", flush=True)
    report["profile_4x4"] = _profile_summary(encoder, data)
    print("\n".join(report["profile_4x4"]), flush=True)
    for lanes in (256, 1024):
        record(_decode_row(_codec("mscm4x4-paper", channels, lanes), image, args.repeats), f"{w}x{h}")
    for unroll in (4, 8):
        codec = _codec("mscm4x4-paper", channels, unroll=unroll)
        record(_decode_row(codec, image, args.repeats), f"{w}x{h}")
    for flags in XLA_VARIANTS:
        print(f"XLA_FLAGS={flags}, a new process:", flush=True)
        row = _variant_row(flags, args.small, args.repeats)  # it prints its row
        if row is not None:
            report["rows"].append(row)

    save()


if __name__ == "__main__":
    main()
