"""Our decoding time next to the authors' decoding computation, on the same machine, in one run.

    python experiments/authors_decode_cost.py --run-name cpu-2core

docs/paper.md quotes the authors' decoding times (512x768, cheng2020-attn N = M = 192,
K = 3): entropy decoding 0.23 s (2x2) / 0.91 s (4x4), full decode 2.35 / 2.80 s.
Timings differ from machine to machine by more than the effects compared, so
this script measures both sides here, one after the other:

1. the authors' computation, rebuilt in PyTorch from docs/paper.md's facts
   (`experiments/torch_authors_decode.py`, in the PyTorch venv that
   `mscm_jax/tools/torch_env/setup_env.sh` makes): hyper-synthesis, synthesis and,
   per stage, the context convolution and entropy-parameter network over the
   whole latent. Without their coder, so a lower bound of their times;
2. ours: real compress / decompress with the codec (`python -m mscm_jax.tools.bench
   coding`) for checkerboard, mscm2x2 and mscm4x4-paper.

Writes `README.md` and `results.json` under `experiments/results/<run-name>/`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from mscm_jax.tools import bench, experiment

HERE = os.path.dirname(os.path.abspath(__file__))
PAPER = {  # docs/paper.md, "Timings of the authors' code measured for this project"
    "mscm2x2": {"entropy_decoding_s": 0.23, "decode_s": 2.35},
    "mscm4x4-paper": {"entropy_decoding_s": 0.91, "decode_s": 2.80},
}
OURS = ("checkerboard", "mscm2x2", "mscm4x4-paper")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-name", required=True, help="results go to <results>/<run-name>/")
    p.add_argument("--results", default=os.path.join(HERE, "results"))
    p.add_argument("--torch-python", default="", help="python of a venv with torch and compressai "
                   "(default: made by mscm_jax/tools/torch_env/setup_env.sh)")  # fmt: skip
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--channels", type=int, default=192, help="N = M")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--latent-scale", type=float, default=6.0, help="see `bench coding`")
    return p.parse_args(argv)


def authors_computation(python: str, args) -> dict:
    cmd = [python, os.path.join(HERE, "torch_authors_decode.py"), "--height", str(args.height),
           "--width", str(args.width), "--channels", str(args.channels),
           "--repeats", str(args.repeats)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def our_coding(args) -> dict:
    argv = ["coding", "--schedules", *OURS, "--height", str(args.height), "--width", str(args.width),
            "--channels", str(args.channels), "--repeats", str(args.repeats),
            "--latent-scale", str(args.latent_scale)]  # fmt: skip
    return bench.bench_coding(bench.build_parser().parse_args(argv))


def comparison_rows(authors: dict, ours: dict) -> list[dict]:
    """Per multistage pattern: ours, the authors' computation here, docs/paper.md's figures, and ratios."""
    rows = []
    for name, theirs in authors["patterns"].items():
        mine = ours["schedules"][name]
        their_decode = theirs["entropy_decoding_lower_bound_s"] + authors["synthesis_s"]
        rows.append({
            "schedule": name,
            "ours_entropy_decoding_s": mine["entropy_decoding_s"],
            "authors_here_entropy_decoding_s": theirs["entropy_decoding_lower_bound_s"],
            "paper_entropy_decoding_s": PAPER[name]["entropy_decoding_s"],
            "ours_decode_s": mine["decode_s"],
            "authors_here_decode_s": their_decode,
            "paper_decode_s": PAPER[name]["decode_s"],
            "ours_vs_authors_here": mine["entropy_decoding_s"] / theirs["entropy_decoding_lower_bound_s"],
            "ours_vs_paper": mine["entropy_decoding_s"] / PAPER[name]["entropy_decoding_s"],
        })  # fmt: skip
    return rows


def write_readme(path: str, record: dict) -> None:
    authors, ours, rows = record["authors_here"], record["ours"], record["comparison"]
    cb = ours["schedules"]["checkerboard"]["entropy_decoding_s"]
    ratios = ours["ratio_4x4_checkerboard"]["per_repeat"]
    lines = [
        f"# Decoding time: ours and the authors' computation ({record['run_name']})",
        "",
        f"Command: `{record['metadata']['command']}`",
        "",
        *experiment.provenance_lines(record["metadata"]),
        f"- authors' computation: PyTorch {authors['torch']}, {authors['threads']} threads; matmul "
        f"{authors['matmul_gflops']:.1f} GFLOP/s (2048^3, float32)",
        f"- image {authors['width']}x{authors['height']}, cheng2020-attn N = M = {authors['channels']}, "
        f"K = {authors['mixtures']}; median of {authors['repeats']} warm runs; seconds",
        "",
        "Entropy decoding = hyper-synthesis + every stage's parameters (+ the coder, ours only: the",
        "authors' side is a lower bound). Decode = entropy decoding + synthesis.",
        "",
        "| schedule | ours entropy dec. | authors' here (lower bound) | docs/paper.md | ours / authors' here "
        "| ours / docs/paper.md | ours decode | authors' here decode | docs/paper.md decode |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['schedule']} | {r['ours_entropy_decoding_s']:.3f} "
            f"| {r['authors_here_entropy_decoding_s']:.3f} | {r['paper_entropy_decoding_s']:.2f} "
            f"| {r['ours_vs_authors_here']:.2f}x | {r['ours_vs_paper']:.2f}x "
            f"| {r['ours_decode_s']:.2f} | {r['authors_here_decode_s']:.2f} | {r['paper_decode_s']:.2f} |"
        )
    lines += [
        "",
        f"- ours: checkerboard entropy decoding {cb:.3f} s; mscm4x4-paper / checkerboard "
        f"{ours['ratio_4x4_checkerboard']['median']:.2f}x (median of the {len(ratios)} repeats' ratios, "
        f"the schedules taking turns; {min(ratios):.2f}x-{max(ratios):.2f}x).",
        f"- synthesis: ours {ours['schedules']['mscm4x4-paper']['synthesis_s']:.2f} s, the authors' "
        f"(CompressAI's g_s) {authors['synthesis_s']:.2f} s here.",
        f"- authors' hyper-synthesis here {authors['hyper_synthesis_s']:.3f} s; their stage loop "
        + ", ".join(f"{n} {p['stages_s']:.3f} s" for n, p in authors["patterns"].items())
        + "; context positions per stage "
        + "; ".join(f"{n} {p['context_counts']}" for n, p in authors["patterns"].items())
        + " (docs/paper.md's check).",
        "",
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    out = os.path.join(args.results, args.run_name)
    # Provenance first: the commit and tree state the run starts from.
    metadata = experiment.run_metadata(["experiments/authors_decode_cost.py", *argv])
    try:  # before any timing: setting up may take minutes
        python = args.torch_python or experiment.torch_reference_python()
    except RuntimeError as e:
        raise SystemExit(str(e)) from None
    authors = authors_computation(python, args)
    ours = our_coding(args)
    record = {"run_name": args.run_name, "metadata": metadata, "authors_here": authors, "ours": ours,
              "paper": PAPER, "comparison": comparison_rows(authors, ours)}  # fmt: skip
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(record, f, indent=1)
    write_readme(os.path.join(out, "README.md"), record)
    print(f"wrote {out}/README.md and results.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
