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


def test_integer_dot_of_int8_inputs_is_one_exact_product():
    rng = np.random.default_rng(1)
    x = rng.integers(-128, 128, (4, 96)).astype(np.int8)
    x[0], x[1] = 127, -128
    w = rng.integers(-127, 128, (96, 5)).astype(np.int8)
    w[:, 0] = -127
    np.testing.assert_array_equal(
        np.asarray(jax.jit(integer_dot)(x, w)), x.astype(np.int64) @ w.astype(np.int64)
    )
    # The point of int8 activations: half the products of the split that wider inputs need.
    assert str(jax.make_jaxpr(integer_dot)(x, w)).count("dot_general") == 1
    assert str(jax.make_jaxpr(integer_dot)(x.astype(np.int16), w)).count("dot_general") == 2
