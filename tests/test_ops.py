import jax
import numpy as np

from mscm_jax.model.ops import integer_dot


def test_integer_dot_is_exact_at_the_extremes_of_int16_and_int8():
    rng = np.random.default_rng(0)
    x = rng.integers(-32767, 32768, (3, 5, 64)).astype(np.int32)
    x[0, 0] = 32767
    x[0, 1] = -32767
    x[0, 2, ::2], x[0, 2, 1::2] = 255, -256  # the split's boundaries: lo at its ends
    w = rng.integers(-127, 128, (64, 7)).astype(np.int8)
    w[:, 0], w[:, 1] = 127, -127
    expected = x.astype(np.int64) @ w.astype(np.int64)
    got = np.asarray(jax.jit(integer_dot)(x, w))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, expected)
