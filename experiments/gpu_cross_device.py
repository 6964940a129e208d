"""A file encoded on the GPU decoded on the CPU with the same weights, and the reverse (one model)."""

import jax
import numpy as np
from gpu_coding import _codec, _image_of_size  # run with PYTHONPATH=.:experiments

from mscm_jax.codec import Codec
from mscm_jax.data import load_sample

gpu, cpu = jax.devices()[0], jax.devices("cpu")[0]
image = _image_of_size(load_sample("astronaut"), 512, 768)
on_gpu = _codec("mscm4x4-paper", 192)
with jax.default_device(cpu):
    on_cpu = Codec(on_gpu.config, jax.device_put(on_gpu.params, cpu))
for name, enc, dec, where in (("gpu -> cpu", on_gpu, on_cpu, cpu), ("cpu -> gpu", on_cpu, on_gpu, gpu)):
    with jax.default_device(cpu if enc is on_cpu else gpu):
        encoded = enc.compress(image)
    try:
        with jax.default_device(where):
            decoded = dec.decompress(encoded.data)
        print(name, "decodes; same y_hat:", np.array_equal(decoded.y_hat, encoded.y_hat), flush=True)
    except ValueError as e:
        print(name, "fails:", e, flush=True)
