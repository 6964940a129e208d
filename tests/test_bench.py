import numpy as np
import pytest

from mscm_jax.tools import bench


def test_scale_spread_sets_only_the_scale_biases():
    channels, mixtures = 4, 3
    bias = np.arange(3 * mixtures * channels, dtype=np.float32)
    params = {"params": {"context": {"entropy_parameters": {"dense2": {"bias": bias}}}}}
    out = bench._spread_scales(params, channels, mixtures, 0.5, 8.0)
    new = np.asarray(out["params"]["context"]["entropy_parameters"]["dense2"]["bias"])
    np.testing.assert_allclose(new[: mixtures * channels], np.tile([0.5, 1.25992, 3.1748, 8.0], 3), rtol=1e-5)
    np.testing.assert_array_equal(new[mixtures * channels :], bias[mixtures * channels :])


def test_coding_arguments():
    args = bench.build_parser().parse_args(["coding", "--scale-spread", "0.2", "8"])
    assert args.scale_spread == [0.2, 8.0] and args.latent_scale == 40.0
    assert bench.build_parser().parse_args(["coding"]).scale_spread is None


def test_non_positive_scale_spread_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["coding", "--scale-spread", "0", "8"])
    assert exit_info.value.code == 2 and "two positive scales" in capsys.readouterr().err
