"""Files encoded on the GPU decoded on the CPU with the same model, and the reverse.

    PYTHONPATH=.:experiments python experiments/gpu_cross_device.py

Both paths of one model (cheng2020-attn N=M=192, mscm4x4-paper, 512x768):
the float path (coder 4), which is not expected to survive the change of
device, and the integer path (coder 5), which must decode to the same y_hat;
the CPU's files are also decoded on the GPU with the decode kernel.
The GPU speed of the integer path: `python -m mscm_jax.tools.bench coding --integer`.
"""

import jax
import numpy as np
from gpu_coding import _codec, _image_of_size

from mscm_jax.coding.codec import Codec
from mscm_jax.training.data import calibration_images, load_sample

gpu, cpu = jax.devices()[0], jax.devices("cpu")[0]
image = _image_of_size(load_sample("astronaut"), 512, 768)
float_gpu = _codec("mscm4x4-paper", 192)
for path in ("float", "integer"):
    on_gpu = (
        float_gpu if path == "float" else float_gpu.with_integer_path(calibration_images("samples", 2, 256))
    )
    with jax.default_device(cpu):
        integer = None if on_gpu.integer is None else jax.device_put(on_gpu.integer, cpu)
        on_cpu = Codec(on_gpu.config, jax.device_put(on_gpu.params, cpu), on_gpu.z_cdf, integer=integer)
    # The GPU's decode kernel (`Codec(decode_kernel=True)`) on the CPU's file, too.
    kernel = Codec(on_gpu.config, on_gpu.params, on_gpu.z_cdf, integer=on_gpu.integer, decode_kernel=True)
    cases = [("gpu -> cpu", on_gpu, on_cpu, cpu), ("cpu -> gpu", on_cpu, on_gpu, gpu),
             ("cpu -> gpu, decode kernel", on_cpu, kernel, gpu)]  # fmt: skip
    for name, enc, dec, where in cases:
        with jax.default_device(cpu if enc is on_cpu else gpu):
            encoded = enc.compress(image)
        try:
            with jax.default_device(where):
                decoded = dec.decompress(encoded.data)
            same = np.array_equal(decoded.y_hat, encoded.y_hat)
            print(f"{path} path, {name}: decodes; same y_hat: {same}", flush=True)
        except ValueError as e:
            print(f"{path} path, {name}: fails: {e}", flush=True)
        except Exception as e:  # a kernel that does not compile must not end the run
            print(f"{path} path, {name}: error: {type(e).__name__}: {str(e)[:2000]}", flush=True)
