"""The decode kernels compiled for a GPU on a machine without one: PTX, then ptxas's registers and spills.

    pip install --target /tmp/cuda "jax-cuda12-plugin==$(python -c 'import jax; print(jax.__version__)')" \
        "jax-cuda12-pjrt==$(python -c 'import jax; print(jax.__version__)')" nvidia-cuda-nvcc-cu12 --no-deps
    PYTHONPATH=/tmp/cuda python experiments/kernel_compile.py [--arch 9.0] [--lanes 32 256] [--warps 1 2 4]

`rans_kernel`'s two kernels (y's mixtures, z's tables) are lowered for CUDA
(`jax.export`, as in tests/test_rans_kernel.py), and the Triton programs that
lowering embeds are compiled to PTX by the same Triton and LLVM that XLA uses
on a GPU: the CUDA plugin's compiler, which needs no GPU. If ptxas is found
(the `nvidia-cuda-nvcc-cu12` package, or on PATH), each PTX is assembled for
the architecture and ptxas's figures printed: registers per thread, spills,
shared memory. A kernel that Triton or ptxas cannot compile fails here, not
in the first GPU run. Speed is not measured: that is `gpu_coding.py`'s.

Reads the programs from the exported module's `ir` attributes, where jaxlib
<= 0.10.2 puts them; a later jaxlib compiles them while lowering instead.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the CUDA plugin loads without a GPU, but no client
os.environ.setdefault("JAX_SKIP_CUDA_CONSTRAINTS_CHECK", "1")

import jax
import jax.numpy as jnp
import numpy as np
from jax._src.lib import triton

from mscm_jax.coding import integer_cdf, rans, rans_kernel

TRITON_CALL = "__gpu$xla.gpu.triton"


def _cuda_compiler() -> None:
    """Registers the CUDA plugin's Triton compiler, or exits saying how to install it."""
    jax.devices()  # plugin discovery first: it may register the compiler itself
    if triton.has_compilation_handler("CUDA"):
        return
    try:
        import jax_plugins.xla_cuda12 as plugin
    except ImportError:
        sys.exit("the CUDA plugin is not installed: see this script's docstring for the pip command")
    plugin.initialize()
    if not triton.has_compilation_handler("CUDA"):
        sys.exit("the CUDA plugin loaded without its Triton compiler (cuda_plugin_extension missing)")


def _mlir_string(text: str) -> bytes:
    """The bytes of an MLIR string literal's body: `\\XX` hex escapes and `\\"`, `\\\\`, `\\n`, `\\t`."""
    out, i = bytearray(), 0
    named = {'"': 34, "\\": 92, "n": 10, "t": 9}
    while i < len(text):
        if text[i] != "\\":
            out += text[i].encode()
            i += 1
        elif text[i + 1] in named:
            out.append(named[text[i + 1]])
            i += 2
        else:
            out.append(int(text[i + 1 : i + 3], 16))
            i += 3
    return bytes(out)


def triton_programs(lanes: int, num_warps: int) -> dict[str, bytes]:
    """The two kernels' Triton programs (MLIR bytecode) for `lanes` lanes, as the codec lowers them."""
    rng = np.random.default_rng(0)
    size = 4 * lanes
    models = integer_cdf.quantize_parameters(
        jnp.asarray(rng.normal(0, 3, (3, size)), jnp.float32),
        jnp.asarray(np.exp(rng.uniform(-2, 5, (3, size))), jnp.float32),
        jnp.asarray(rng.dirichlet(np.ones(3), size).T, jnp.float32),
        True,
    )
    cdfs = jnp.asarray(integer_cdf.quantize_pmf(rng.dirichlet(np.full(17, 0.3), 6)))
    rows = jnp.zeros((1, size), jnp.int32)
    words = jnp.zeros(rans.max_words(2 * size) + 2 * lanes, jnp.uint16)
    state = rans.new_decoder(words, lanes)
    kernels = {
        "y mixtures": functools.partial(rans_kernel.decode_mixture_segment, num_warps=num_warps),
        "z tables": functools.partial(rans_kernel.decode_table_segment, num_warps=num_warps),
    }
    args = {"y mixtures": (state, words, models), "z tables": (state, words, rows, cdfs)}
    programs = {}
    for name, kernel in kernels.items():
        module = jax.export.export(
            jax.jit(kernel), platforms=["cuda"],
            disabled_checks=[jax.export.DisabledSafetyCheck.custom_call(TRITON_CALL)],
        )(*args[name]).mlir_module()  # fmt: skip
        found = re.findall(r'ir = "((?:[^"\\]|\\.)*)"', module)
        if len(found) != 1:
            sys.exit(f"{name}: {len(found)} Triton programs in the lowered module, expected 1 (a jaxlib that "
                     "compiles them while lowering does not embed them)")  # fmt: skip
        programs[name] = _mlir_string(found[0])
    return programs


def _ptxas() -> str | None:
    candidates = (os.path.join(p, "nvidia", "cuda_nvcc", "bin", "ptxas") for p in sys.path if p)
    return next((c for c in candidates if os.path.isfile(c)), None) or shutil.which("ptxas")


def ptxas_figures(ptxas: str, ptx: str, arch: str) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        source, binary = os.path.join(tmp, "k.ptx"), os.path.join(tmp, "k.cubin")
        with open(source, "w") as f:
            f.write(ptx)
        run = subprocess.run([ptxas, f"-arch=sm_{arch}", "-v", source, "-o", binary], capture_output=True,
                             text=True)  # fmt: skip
    if run.returncode:
        return f"ptxas failed: {run.stderr.strip()[-500:]}"
    registers = re.search(r"Used (\d+) registers", run.stderr)
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", run.stderr)
    return f"{registers.group(1)} registers, spills {spills.group(1)} B stored / {spills.group(2)} B loaded"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="9.0", help="compute capability (9.0: H100, H200)")
    parser.add_argument("--lanes", type=int, nargs="+", default=[32, 128, 256])
    parser.add_argument("--warps", type=int, nargs="+", default=[1, 4, 8])
    args = parser.parse_args(argv)
    _cuda_compiler()
    ptxas = _ptxas()
    # The architecture-specific features Triton targets on Hopper (its PTX says sm_90a).
    ptxas_arch = args.arch.replace(".", "") + ("a" if args.arch.startswith("9") else "")
    print(f"# jax {jax.__version__}; compute capability {args.arch}; ptxas: {ptxas or 'not found'}")
    for lanes in args.lanes:
        for warps in args.warps:
            for name, program in triton_programs(lanes, warps).items():
                compiled = triton.compile("CUDA", program, args.arch, num_warps=warps, num_ctas=1,
                                          num_stages=3)  # fmt: skip
                ptx = compiled.asm
                line = (f"{name:10s} {lanes:4d} lanes, {warps} warps: PTX {ptx.count(chr(10))} lines, "
                        f"{ptx.count('bar.sync')} barriers, shared {compiled.smem_bytes} B")  # fmt: skip
                if ptxas:
                    line += "; " + ptxas_figures(ptxas, compiled.asm, ptxas_arch)
                print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
