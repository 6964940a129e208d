"""A state dict saved as the MSCM authors' training checkpoint, read back (runs in the torch venv).

Their code trains with CompressAI's example training script, which saves
`checkpoint.pth.tar` as `torch.save({"epoch", "state_dict", "loss", "optimizer",
"aux_optimizer", "lr_scheduler"})`: the model's state dict (keys prefixed
`module.` when trained under DataParallel) beside the states of two Adam
optimizers and a ReduceLROnPlateau scheduler. Here those are real torch
objects stepped once, so the file holds what `torch.load(weights_only=True)`
meets in practice (step tensors, betas tuples, None and inf values).

Usage: authors_checkpoint.py STATE.npz OUT.pth.tar READ.npz [--prefix module.]
Reads STATE.npz (key -> array), writes OUT.pth.tar, reads it back with
mscm_jax/tools/torch_checkpoint.py (by path: the package needs JAX) and writes what
it read to READ.npz.
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np
import torch
from compressai_reference import load_reader  # beside this script, which runs from its folder


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("state", type=pathlib.Path)
    parser.add_argument("out", type=pathlib.Path)
    parser.add_argument("read", type=pathlib.Path)
    parser.add_argument("--prefix", default="")
    args = parser.parse_args()
    with np.load(args.state) as archive:
        state = {k: torch.from_numpy(archive[k]) for k in archive.files}
    params = [torch.nn.Parameter(v.clone()) for k, v in state.items() if k.endswith(".weight")]
    aux = [torch.nn.Parameter(state["entropy_bottleneck.quantiles"].clone())]
    optimizer, aux_optimizer = torch.optim.Adam(params, lr=1e-4), torch.optim.Adam(aux, lr=1e-3)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, "min")
    loss = sum((p**2).sum() for p in params) + (aux[0] ** 2).sum()
    loss.backward()
    optimizer.step()
    aux_optimizer.step()
    scheduler.step(loss.detach())
    torch.save(
        {
            "epoch": 3,
            "state_dict": {f"{args.prefix}{k}": v for k, v in state.items()},
            "loss": loss.detach(),
            "optimizer": optimizer.state_dict(),
            "aux_optimizer": aux_optimizer.state_dict(),
            "lr_scheduler": scheduler.state_dict(),
        },
        args.out,
    )
    read = load_reader().load_state_dict(args.out)
    np.savez(args.read, **read)
    print(f"{args.out.name}: {len(state)} tensors, {args.out.stat().st_size} bytes; read {len(read)} arrays")


if __name__ == "__main__":
    main()
