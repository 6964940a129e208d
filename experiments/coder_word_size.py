"""Why 16-bit words: the coder's rounding and the lanes' cost against a byte-wise rANS.

    python experiments/coder_word_size.py --model workdirs/quickstart [--images rocket astronaut]

Our rANS keeps a 32-bit state in [2^16, 2^32) and renormalizes by 16-bit
words, with frequencies out of 2^16: the state's lower bound equals the
frequency total, so each symbol is coded with a slightly state-dependent
probability, a rounding of either sign. A byte-wise coder (state in [2^24,
2^32), up to two bytes per renormalization) has 2^8 times more room and
rounds almost nothing, but its known start state wastes 24 bits instead of
16 in every lane.

For each image (512x768 crop) this codes the model's real symbols, z then y
stage by stage as the codec does, in one lane with both word sizes (a plain
Python coder, `_code`), and prints the rounding (payload minus the ideal
under the integer models minus the lane's cost) and the lane's cost. The
16-bit coder's payload is checked against the codec's own one-lane file.
Then the same for i.i.d. symbols from a discretized Laplacian table: drawn
from the table itself, and drawn one bin off (a model that is wrong).
"""

from __future__ import annotations

import argparse
import math

import jax
import jax.numpy as jnp
import numpy as np

from mscm_jax.coding import codec as codec_module
from mscm_jax.coding import integer_cdf
from mscm_jax.coding.codec import Codec
from mscm_jax.images import as_rgb_uint8
from mscm_jax.tools.bench import _image_of_size
from mscm_jax.training.data import load_sample

TOTAL = 1 << integer_cdf.PRECISION


def _code(starts: np.ndarray, freqs: np.ndarray, word_bits: int) -> tuple[int, float]:
    """(payload bits, lane cost bits) of one rANS lane, 32-bit state, words of `word_bits`.

    Encodes in reverse (rANS is last in, first out); the payload is the words
    written plus the 32-bit final state. The lane's cost is what the start
    state and the final state's unused range take: 32 + log2(low) - log2(x).
    """
    low = 1 << (32 - word_bits)
    x, bits = low, 0
    for start, freq in zip(starts[::-1].tolist(), freqs[::-1].tolist(), strict=True):
        limit = ((low >> integer_cdf.PRECISION) << word_bits) * freq
        while x >= limit:
            x >>= word_bits
            bits += word_bits
        x = (x // freq) * TOTAL + x % freq + start
    return bits + 32, 32 + math.log2(low) - math.log2(x)


@jax.jit
def _stage_intervals(params: jax.Array, symbols: jax.Array) -> tuple[jax.Array, jax.Array]:
    return codec_module._intervals(symbols, params, integer_cdf.mixture_cdf, integer_cdf.half_widths)[2:]


def _image_symbols(codec: Codec, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(starts, freqs) of every symbol in decoding order: z, then each y stage (no escapes expected)."""
    image, _ = as_rgb_uint8(image)
    _, _, _, z_symbols, _, stages = codec._encoder_models(image, codec_module._Stopwatch(codec._compiled))
    flat = jnp.asarray(z_symbols).reshape(-1)
    z_models = codec_module._z_models(z_symbols.shape)
    _, _, start, freq = codec_module._intervals(flat, z_models, *codec_module._z_coder(codec._z_cdf))
    starts, freqs = [np.asarray(start)], [np.asarray(freq)]
    for params, symbols, count in stages:
        start, freq = _stage_intervals(params, symbols)
        starts.append(np.asarray(start)[: int(count)])
        freqs.append(np.asarray(freq)[: int(count)])
    return np.concatenate(starts).astype(np.int64), np.concatenate(freqs).astype(np.int64)


def _report(label: str, starts: np.ndarray, freqs: np.ndarray) -> dict[int, int]:
    ideal = float(np.sum(integer_cdf.PRECISION - np.log2(freqs.astype(np.float64))))
    payloads = {}
    for word_bits in (16, 8):
        payload, lane = _code(starts, freqs, word_bits)
        rounding = payload - ideal - lane
        payloads[word_bits] = payload
        print(
            f"{label}, {word_bits:2d}-bit words: payload {payload / 8:.0f} B = ideal {ideal / 8:.0f} B "
            f"+ lane {lane:.1f} bits + rounding {rounding / 8:+.1f} B ({100 * rounding / ideal:+.4f} %)",
            flush=True,
        )
    return payloads


def _laplacian_table(scale: float, half_width: int = 32) -> np.ndarray:
    q = np.arange(-half_width, half_width + 1)
    p = np.exp(-np.abs(q) / scale)
    freqs = np.maximum(1, np.floor(p / p.sum() * (TOTAL - q.size)).astype(np.int64))
    freqs[half_width] += TOTAL - freqs.sum()
    return freqs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="workdirs/quickstart")
    parser.add_argument("--images", nargs="+", default=["rocket", "astronaut", "coffee", "chelsea"])
    parser.add_argument("--synthetic-symbols", type=int, default=200_000)
    args = parser.parse_args()
    codec = Codec.load(args.model).with_lanes(1)
    for name in args.images:
        image = _image_of_size(load_sample(name), 512, 768)
        payloads = _report(f"{name} 768x512", *_image_symbols(codec, image))
        result = codec.compress(image)
        same = "the same" if 8 * result.payload_bytes == payloads[16] else "NOT the same"
        print(f"  the codec's one-lane file: payload {result.payload_bytes} B, {same} as the 16-bit coder")
    rng = np.random.default_rng(0)
    for scale in (0.05, 0.5, 2.0):
        freqs = _laplacian_table(scale)
        cdf = np.concatenate([[0], np.cumsum(freqs)])
        for source, shift in (("drawn from the table", 0), ("drawn one bin off", 1)):
            symbols = rng.choice(freqs.size, size=args.synthetic_symbols, p=np.roll(freqs, shift) / TOTAL)
            _report(f"Laplacian scale {scale}, {source}", cdf[symbols], freqs[symbols])


if __name__ == "__main__":
    main()
