"""Frozen-transform comparison of decoding schedules: rate differences due to the context model alone.

    python experiments/compare_schedules.py --config experiments/configs/frozen_cpu.py \\
        --run-name cpu-small --steps 300 --seeds 0 1 2

1. Train (or, with --base, load) one base model end to end (`config`).
2. Search a 4x4 decoding order on the base model's rounded latents of the
   *training* photos (`order_search`, the same search as `mscm-jax optimize-order`).
3. For every schedule (hyperprior, checkerboard, mscm2x2, mscm3x3, mscm4x4,
   mscm4x4-paper, the found order, serial) and seed: take the base's analysis
   and synthesis transforms (`train.init_from`, `init_from_groups`), freeze them
   (`train.freeze`), and train the hyperprior, the context weights and the
   entropy-parameter network afresh from the seed's initialization, with the
   same budget. With `rounding = y` the quantized latent is round(y) whatever
   the entropy model, so latents and distortion are identical by construction.
4. Code the held-out photos for real with every model (`evaluate`), and write
   `table.md`, `results.json`, `bpp_vs_stages.png`, `decode_time_vs_stages.png`
   and a README with the command, config, commit and machine under
   `experiments/results/<run-name>/`.

`--smoke` shrinks everything (N = M = 4, two steps per schedule, the order
search on one photo) to check the pipeline in seconds; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import sys
import time

import jax
import numpy as np

from mscm_jax.coding.codec import Codec
from mscm_jax.coding.programs import enable_compilation_cache
from mscm_jax.model.schedules import PAPER_4X4_ORDER
from mscm_jax.tools import evaluate, experiment
from mscm_jax.tools.order_search import OrderScorer, model_latent_moments, raster_pattern, search_order
from mscm_jax.training.configs import load_config, to_json
from mscm_jax.training.data import SAMPLE_SCENES, to_float
from mscm_jax.training.train import load_workdir_params, train

SCHEDULES = ("hyperprior", "checkerboard", "mscm2x2", "mscm3x3", "mscm4x4", "mscm4x4-paper", "optimized4x4",
             "serial")  # fmt: skip
OPTIMIZED = "optimized4x4"  # stands for the 4x4 order found in step 2
HERE = os.path.dirname(os.path.abspath(__file__))


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--config", default=os.path.join(HERE, "configs", "frozen_cpu.py"), help="base model config"
    )
    p.add_argument("--run-name", required=True, help="results go to <results>/<run-name>/")
    p.add_argument("--results", default=os.path.join(HERE, "results"))
    p.add_argument("--workroot", default="", help="workdirs (default: /tmp/mscm-experiments/<run-name>)")
    p.add_argument(
        "--base", default="", help="an existing workdir to take the transforms from (skips step 1)"
    )
    p.add_argument("--steps", type=int, default=300, help="training steps per schedule and seed")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--schedules", nargs="+", default=list(SCHEDULES))
    p.add_argument("--images", default="", help="evaluation images (default: the config's held-out scenes)")
    p.add_argument("--max-images", type=int, default=0)
    p.add_argument("--smoke", action="store_true", help="tiny settings to test the pipeline")
    return p.parse_args(argv)


def smoke(config):
    """Tiny settings: seconds on a CPU, meaningless numbers."""
    config.model.update(N=4, M=4, num_mixtures=2)
    config.data.update(crop=32, eval_crop=32, max_eval_images=1)
    config.train.update(total_steps=3, log_every=1, eval_every=3, checkpoint_every=3)
    return config


def schedule_config(base_config, base_workdir: str, schedule: str, seed: int, steps: int):
    """The base config with another schedule, seed and budget, on the base's frozen transforms."""
    c = copy.deepcopy(base_config)
    c.model.schedule = schedule
    c.train.update(
        seed=seed, total_steps=steps, init_from=str(base_workdir), init_from_groups=("transforms",),
        freeze=("transforms",), eval_every=steps, checkpoint_every=steps, log_every=max(1, steps // 4),
    )  # fmt: skip
    return c


def find_order(base_workdir: str, train_images: str, max_images: int = 0) -> dict:
    """The 4x4 order search on the base's latents; its estimated rate next to raster and the authors'."""
    start = time.perf_counter()
    moments, about = model_latent_moments(base_workdir, train_images, max_images, 4)
    scorer = OrderScorer(moments.covariance(), 4, rate_model="discrete")
    found = search_order(scorer, 16)
    return {
        "pattern": found.pattern.tolist(),
        "estimated_bits_per_element": {"found": found.bits,
                                       "mscm4x4 (raster)": scorer.score(raster_pattern(4)),
                                       "mscm4x4-paper": scorer.score(np.asarray(PAPER_4X4_ORDER))},
        "fits": found.fits, "search_seconds": found.seconds, "seconds": time.perf_counter() - start,
        "latents": about,
    }  # fmt: skip


def estimated_bpp(codec: Codec, images) -> float:
    """Mean over images of the model's own rate estimate (forward pass, rounded latents)."""
    return float(np.mean([float(codec.estimate(to_float(image)).bpp[0]) for _, image in images]))


def param_counts(workdir: str) -> dict:
    _, params, _ = load_workdir_params(workdir)
    size = lambda tree: sum(int(np.size(x)) for x in jax.tree.leaves(tree))  # noqa: E731
    context = params["params"]["context"]
    return {"context": size(context), "context_kernel": size(context.get("context_kernel", {}))}


def check_frozen(base_workdir: str, workdir: str) -> None:
    """The transforms of a schedule's model are bit-identical to the base's (else the comparison is void)."""
    _, base, _ = load_workdir_params(base_workdir)
    _, mine, _ = load_workdir_params(workdir)
    for group in ("g_a", "g_s"):
        same = jax.tree.map(
            lambda a, b: bool(np.array_equal(a, b)), base["params"][group], mine["params"][group]
        )
        if not all(jax.tree.leaves(same)):
            raise RuntimeError(f"{workdir}: {group} differs from the base model's")


def write_readme(out: str, meta: dict, table: str, ordering: list[str], order: dict, notes: str) -> None:
    est = order["estimated_bits_per_element"]
    text = f"""# Frozen-transform schedule comparison: {meta["run_name"]}

Command (from the repository root):

    {meta["command"]}

{chr(10).join(experiment.provenance_lines(meta))}
- wall time of this invocation: {meta["wall_seconds"] / 60:.1f} min (base model {meta["base_seconds"]:.0f} s,
  order search {order["seconds"]:.1f} s, training {meta["schedule_seconds"]:.0f} s, coding
  {meta["coding_seconds"]:.0f} s); steps trained in it: {meta["steps_trained"]} (0: every workdir was
  already trained by an earlier invocation of the same command in the same workroot, and was reused)
- base config: `base_config.json`; each schedule: the same with `model.schedule`, `train.seed`,
  `train.total_steps={meta["steps"]}`, `train.init_from=<base>`, `init_from_groups=freeze=("transforms",)`
  (`schedule_config` in `experiments/compare_schedules.py`)
- seeds: {meta["seeds"]}; evaluation images ({meta["num_images"]}): {", ".join(meta["images"])}

## Table

Rates are real coded bits (`mscm-jax evaluate`'s conventions) over the original pixels. *payload bpp* counts
the z and y streams (mean ± sample sd over seeds of the per-seed mean over images); *file bpp* adds the
header, which grows with the number of streams (one per stage), so rate changes use payload bpp. Each
stream also ends with a range-coder flush (a few bytes), so many-stage schedules pay a little per image that
the model's *estimated bpp* (its forward pass on the same images, rounded latents) does not.
*vs serial*, *vs checkerboard*: per-seed payload change `rate(seed) / reference(seed) - 1`, mean ± sd over
the seeds (a seed fixes the batches, the noise and the initial hyperprior weights of every schedule alike,
so the seeds pair up). Two rules decide whether a difference is a ranking (`mscm_jax/tools/experiment.py`):
*unpaired*, the means differ by more than the sum of the two seed sds (the bpp column); *paired*, the mean
per-seed change exceeds its own sd. A change resolved by neither is marked *(unresolved)*, one resolved by
the paired rule only *(paired only)*; unmarked changes pass both.
*context weights*: the 5x5 context kernels; *context + entropy params*: with the entropy-parameter network.
Entropy decoding: z, hyper-synthesis and all y stages on decode, per image, ms (mean over images and seeds).

{table}

![bpp vs stages](bpp_vs_stages.png) ![decode time vs stages](decode_time_vs_stages.png)

## The paper's ordering (serial <= mscm4x4 < mscm2x2 < checkerboard < hyperprior)

{chr(10).join("- " + line for line in ordering)}

## Optimized order

Found on the base model's rounded latents of the training photos ({order["fits"]} fits,
search {order["search_seconds"]:.1f} s): `{json.dumps(order["pattern"])}`. Estimated bits per latent
element (linear-predictor proxy): found {est["found"]:.4f}, raster {est["mscm4x4 (raster)"]:.4f},
authors' {est["mscm4x4-paper"]:.4f}; real coded rates: rows `mscm4x4`, `mscm4x4-paper`, `{OPTIMIZED}` above.

{notes}
"""
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(text)


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    started = time.perf_counter()
    # Provenance first: the commit and tree state the run starts from.
    meta = experiment.run_metadata(
        ["experiments/compare_schedules.py", *(sys.argv[1:] if argv is None else argv)]
    )
    enable_compilation_cache()
    config = load_config(args.config)
    if args.smoke:
        config, args.steps = smoke(config), min(args.steps, 2)
    workroot = args.workroot or os.path.join("/tmp/mscm-experiments", args.run_name)
    out = os.path.join(args.results, args.run_name)
    os.makedirs(out, exist_ok=True)
    eval_scenes = tuple(config.data.eval_scenes)
    train_images = "samples:" + ",".join(s for s in SAMPLE_SCENES if s not in eval_scenes)
    images = evaluate.load_images(args.images or "samples:" + ",".join(eval_scenes), args.max_images)

    # 1. The base model.
    t0 = time.perf_counter()
    base = args.base or os.path.join(workroot, "base")
    if not args.base:
        print(f"[1/4] base model -> {base}", flush=True)
        train(config, base, progress=False)
    base_seconds = time.perf_counter() - t0

    # 2. The order search on the base's latents.
    print(f"[2/4] 4x4 order search on the base's latents (base: {base_seconds:.0f} s)", flush=True)
    order = find_order(base, train_images, max_images=1 if args.smoke else 0)
    print(f"      found {json.dumps(order['pattern'])}: {order['estimated_bits_per_element']}", flush=True)

    # 3. Entropy models trained afresh per schedule and seed; 4. real coding.
    t0, coding_seconds, steps_trained = time.perf_counter(), 0.0, 0
    summaries, raw = [], {}
    for label in args.schedules:
        schedule = json.dumps(order["pattern"]) if label == OPTIMIZED else label
        results, counts, estimates = [], [], []
        for seed in args.seeds:
            workdir = os.path.join(workroot, f"{label}-seed{seed}")
            step_start = time.perf_counter()
            summary = train(
                schedule_config(config, base, schedule, seed, args.steps), workdir, progress=False
            )
            steps_trained += summary.steps_run
            check_frozen(base, workdir)
            t1 = time.perf_counter()
            codec = Codec.load(workdir)
            results.append(evaluate.evaluate_codec(codec, images, workdir))
            estimates.append(estimated_bpp(codec, images))
            counts.append(param_counts(workdir))
            coding_seconds += time.perf_counter() - t1
            payload = results[-1].mean("payload_bpp")
            print(f"[3/4] {label} seed {seed}: trained {summary.steps_run} steps in {t1 - step_start:.0f} s, "
                  f"coded in {time.perf_counter() - t1:.0f} s; payload {payload:.4f} bpp",
                  flush=True)  # fmt: skip
        summaries.append(
            experiment.summarize(
                label, schedule, results, counts, estimates, transform=config.model.transform
            )
        )
        raw[label] = evaluate.results_dict(results, name=label)
    schedule_seconds = time.perf_counter() - t0 - coding_seconds

    by_label = {s.label: s for s in summaries}
    table = experiment.markdown_table(summaries)
    ordering = experiment.paper_ordering(by_label)
    experiment.plot_vs_stages(
        summaries, os.path.join(out, "bpp_vs_stages.png"), os.path.join(out, "decode_time_vs_stages.png")
    )
    meta.update(
        run_name=args.run_name, steps=args.steps, seeds=list(args.seeds), smoke=args.smoke, base=base,
        images=[n for n, _ in images], num_images=len(images), base_seconds=base_seconds,
        schedule_seconds=schedule_seconds, coding_seconds=coding_seconds, steps_trained=steps_trained,
        wall_seconds=time.perf_counter() - started,
    )  # fmt: skip
    with open(os.path.join(out, "base_config.json"), "w") as f:
        f.write(to_json(config))
    with open(os.path.join(out, "results.json"), "w") as f:
        record = {"metadata": meta, "order_search": order, "paper_ordering": ordering,
                  "summaries": [dataclasses.asdict(s) for s in summaries], "evaluations": raw}  # fmt: skip
        json.dump(record, f, indent=2)
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(table + "\n")
    notes = "(Smoke run: tiny settings, the numbers mean nothing.)" if args.smoke else ""
    write_readme(out, meta, table, ordering, order, notes)
    print(table)
    print("\n".join(ordering))
    print(f"wrote {out} in {meta['wall_seconds'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
