import jax
import jax.numpy as jnp
import numpy as np

from mscm_jax.model.layers import GDN, Conv2d, ConvTranspose2d, gdn, invert_gdn
from mscm_jax.model.ops import pixel_shuffle


def test_inverse_gdn_inverts_gdn():
    c = 6
    module = GDN()
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 5, 7, c))
    params = module.init(jax.random.PRNGKey(1), x)
    # Perturb gamma off its diagonal init so that channels interact.
    params = jax.tree_util.tree_map(lambda a: a, params)
    gamma_v = params["params"]["gamma"] + 0.05 * jax.random.uniform(jax.random.PRNGKey(2), (c, c))
    params = {"params": {**params["params"], "gamma": gamma_v}}
    beta, gamma = module.apply(params, c, method=GDN.parameters)
    y = module.apply(params, x)
    np.testing.assert_allclose(np.asarray(y), np.asarray(gdn(x, beta, gamma)), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(invert_gdn(y, beta, gamma, 60)), np.asarray(x), atol=1e-5)
    # The IGDN layer is the first step of that inversion, with the same parameters.
    igdn = GDN(inverse=True).apply(params, y)
    np.testing.assert_allclose(np.asarray(igdn), np.asarray(invert_gdn(y, beta, gamma, 1)), rtol=1e-6)


def test_gdn_parameters_stay_non_negative():
    module = GDN()
    params = {"params": {"beta": -jnp.ones(3), "gamma": -jnp.ones((3, 3))}}
    beta, gamma = module.apply(params, 3, method=GDN.parameters)
    assert float(beta.min()) >= 1e-6 * 0.99 and float(gamma.min()) >= 0.0


def test_pixel_shuffle_uses_pytorch_channel_order():
    r, c = 2, 3
    x = np.arange(1 * 2 * 3 * c * r * r, dtype=np.float32).reshape(1, 2, 3, c * r * r)
    out = np.asarray(pixel_shuffle(jnp.asarray(x), r))
    for ch in range(c):
        for i in range(r):
            for j in range(r):
                np.testing.assert_array_equal(out[0, i::r, j::r, ch], x[0, :, :, ch * r * r + i * r + j])


def _torch_conv2d(x, w, stride, pad):
    """PyTorch `conv2d` semantics in numpy: x (H, W, Cin), w (Cout, Cin, k, k)."""
    k = w.shape[-1]
    xp = np.pad(x, ((pad, pad), (pad, pad), (0, 0)))
    h_out = (x.shape[0] + 2 * pad - k) // stride + 1
    w_out = (x.shape[1] + 2 * pad - k) // stride + 1
    out = np.zeros((h_out, w_out, w.shape[0]))
    for i in range(h_out):
        for j in range(w_out):
            patch = xp[i * stride : i * stride + k, j * stride : j * stride + k]
            out[i, j] = np.einsum("abc,ocab->o", patch, w)
    return out


def _torch_conv_transpose2d(x, w, stride, pad, output_padding):
    """PyTorch `conv_transpose2d` in numpy by scattering: w (Cin, Cout, k, k)."""
    k = w.shape[-1]
    h, wd = x.shape[:2]
    full = np.zeros(((h - 1) * stride + k, (wd - 1) * stride + k, w.shape[1]))
    for i in range(h):
        for j in range(wd):
            full[i * stride : i * stride + k, j * stride : j * stride + k] += np.einsum(
                "c,coab->abo", x[i, j], w
            )
    h_out = (h - 1) * stride - 2 * pad + k + output_padding
    w_out = (wd - 1) * stride - 2 * pad + k + output_padding
    full = np.pad(full, ((0, output_padding), (0, output_padding), (0, 0)))
    return full[pad : pad + h_out, pad : pad + w_out]


def test_strided_conv_pads_like_pytorch():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 10, 3)).astype(np.float32)
    w_torch = rng.normal(size=(4, 3, 5, 5)).astype(np.float32)
    params = {"params": {"kernel": jnp.asarray(w_torch.transpose(2, 3, 1, 0)), "bias": jnp.zeros(4)}}
    out = Conv2d(4, 5, 2).apply(params, jnp.asarray(x)[None])[0]
    np.testing.assert_allclose(np.asarray(out), _torch_conv2d(x, w_torch, 2, 2), atol=1e-4)


def test_transposed_conv_matches_pytorch():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 5, 3)).astype(np.float32)
    w_torch = rng.normal(size=(3, 2, 5, 5)).astype(np.float32)  # (in, out, kh, kw)
    kernel = w_torch[:, :, ::-1, ::-1].transpose(2, 3, 0, 1)  # as ConvTranspose2d documents.
    params = {"params": {"kernel": jnp.asarray(kernel.copy()), "bias": jnp.zeros(2)}}
    out = ConvTranspose2d(2, 5, 2).apply(params, jnp.asarray(x)[None])[0]
    assert out.shape == (8, 10, 2)
    np.testing.assert_allclose(np.asarray(out), _torch_conv_transpose2d(x, w_torch, 2, 2, 1), atol=1e-4)
