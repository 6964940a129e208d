"""Rate-distortion sweep: schedules x qualities trained end to end, coded for real, BD-rates vs an anchor.

    python experiments/rd_sweep.py --run-name paper-q1-6 --schedules checkerboard mscm2x2 mscm4x4-paper \\
        --qualities 1 2 3 4 5 6 --anchor checkerboard --images /data/kodak [--config.train.total_steps=...]

Each (schedule, quality) trains `launch/paper.py:SCHEDULE,qQ[,mbt2018]` in
`<workroot>/<schedule>-q<Q>` (re-running resumes or skips finished runs),
then every schedule's models are coded with `evaluate` (one CompressAI-layout
JSON per schedule: one curve), and the sweep writes `rd.png`, `bd_rate.md`
and a README with the command, configs, commit and machine under
`experiments/results/<run-name>/`.

This is accelerator-scale work (the paper's setting trains ~1M steps per
point). On a CPU use `--smoke`: N = M = 4, a few steps on the sample photos,
to test the pipeline; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from mscm_jax.coding.programs import enable_compilation_cache
from mscm_jax.model.transforms import TRANSFORMS
from mscm_jax.tools import evaluate, experiment
from mscm_jax.training.configs import load_config, to_json
from mscm_jax.training.train import train

HERE = os.path.dirname(os.path.abspath(__file__))
PAPER = os.path.join(os.path.dirname(HERE), "launch", "paper.py")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-name", required=True, help="results go to <results>/<run-name>/")
    p.add_argument("--schedules", nargs="+", default=["checkerboard", "mscm2x2", "mscm4x4-paper"])
    p.add_argument("--qualities", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6])
    p.add_argument("--anchor", default="", help="BD-rate anchor schedule (default: the first)")
    p.add_argument("--family", default="cheng2020-attn", choices=list(TRANSFORMS))
    p.add_argument(
        "--images", default="samples", help="evaluation images: samples, samples:SCENE,... or a folder"
    )
    p.add_argument("--max-images", type=int, default=0)
    p.add_argument("--results", default=os.path.join(HERE, "results"))
    p.add_argument("--workroot", default="", help="workdirs (default: /tmp/mscm-experiments/<run-name>)")
    p.add_argument("--smoke", action="store_true", help="tiny settings to test the pipeline on a CPU")
    args, unknown = p.parse_known_args(argv)
    bad = [a for a in unknown if not a.startswith("--config.")]
    if bad:
        p.error(f"unrecognized arguments: {' '.join(bad)}")
    args.overrides = unknown
    return args


def point_config(schedule: str, quality: int, family: str, overrides, smoke: bool):
    """launch/paper.py's config of one RD point, with overrides (and the smoke shrink)."""
    spec = f"{PAPER}:{schedule},q{quality},{family}"
    config = load_config(spec, overrides)
    if smoke:
        config.model.update(N=4, M=4)
        config.data.update(source="samples", crop=32, eval_crop=32, max_eval_images=1, workers=1)
        config.train.update(batch_size=2, total_steps=2, log_every=1, eval_every=2, checkpoint_every=2)
    return config


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    started = time.perf_counter()
    meta = experiment.run_metadata(["experiments/rd_sweep.py", *argv])
    enable_compilation_cache()
    anchor = args.anchor or args.schedules[0]
    if anchor not in args.schedules:
        raise SystemExit(f"--anchor {anchor} is not among --schedules {args.schedules}")
    workroot = args.workroot or os.path.join("/tmp/mscm-experiments", args.run_name)
    out = os.path.join(args.results, args.run_name)
    os.makedirs(out, exist_ok=True)
    images = evaluate.load_images(args.images, args.max_images)

    results, configs = {}, {}
    for schedule in args.schedules:
        workdirs = []
        for quality in args.qualities:
            config = point_config(schedule, quality, args.family, args.overrides, args.smoke)
            workdir = os.path.join(workroot, f"{schedule}-q{quality}")
            summary = train(config, workdir, progress=False)
            print(f"{schedule} q{quality}: trained {summary.steps_run} steps -> {workdir}", flush=True)
            workdirs.append(workdir)
            configs[f"{schedule}-q{quality}"] = json.loads(to_json(config))
        results[schedule] = evaluate.evaluate_models(workdirs, images, progress=False)
        evaluate.write_results_json(results[schedule], os.path.join(out, f"{schedule}.json"), name=schedule)
        print("\n".join(evaluate.summary_lines(results[schedule])), flush=True)

    curves = experiment.rd_curves(results)
    experiment.plot_rd(curves, os.path.join(out, "rd.png"))
    table = experiment.bd_rate_markdown(curves, anchor)
    with open(os.path.join(out, "configs.json"), "w") as f:
        json.dump(configs, f, indent=2, sort_keys=True)
    meta["wall_seconds"] = time.perf_counter() - started
    with open(os.path.join(out, "bd_rate.md"), "w") as f:
        f.write(table + "\n")
    with open(os.path.join(out, "README.md"), "w") as f:
        f.write(
            f"# RD sweep: {args.run_name}\n\n    {meta['command']}\n\n"
            + "\n".join(experiment.provenance_lines(meta))
            + f"\n- wall time {meta['wall_seconds'] / 60:.1f} min\n"
            f"- configs: `configs.json` (launch/paper.py with the overrides"
            f"{', smoke-shrunk' if args.smoke else ''}); "
            f"images ({len(images)}): {args.images}\n"
            f"- curves: one CompressAI-layout JSON per schedule; `rd.png`\n\n{table}\n"
            + ("\n(Smoke run: tiny settings, the numbers mean nothing.)\n" if args.smoke else "")
        )
    print(table)
    print(f"wrote {out} in {meta['wall_seconds'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
