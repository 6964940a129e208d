from types import SimpleNamespace

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


@pytest.mark.parametrize(
    "args, message",
    [
        (["coding", "--repeats", "0"], "--repeats takes a positive integer, got 0"),
        (["stages", "--height", "-1"], "--height takes a positive integer, got -1"),
        (["coding", "--schedules", "checkerboard", "zigzag"], "unknown schedule 'zigzag'"),
        (["coding", "--throughput-schedule", "[[0, 0]]"], "stage pattern must be square"),
        (["train-step", "--transform", "bls2017"], "--transform takes one of mbt2018, cheng2020-attn"),
    ],
)
def test_bad_arguments_are_one_line_before_anything_runs(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and message in err and "Traceback" not in err


def test_entropy_decoding_runs_pair_each_run_with_the_other_codecs_run_of_the_same_turn(capsys):
    class FakeCodec:  # entropy decoding takes the next of its times
        def __init__(self, seconds):
            self.seconds = iter(seconds)

        def decode_latent(self, data):
            return None, SimpleNamespace(entropy_coding=next(self.seconds))

    codecs = {"four": FakeCodec([0.5, 0.3, 0.9]), "cb": FakeCodec([0.25, 0.6, 0.3])}
    seconds = bench._entropy_decoding_runs(codecs, {"four": b"", "cb": b""}, 3)
    short = bench._ratio(seconds["four"], seconds["cb"])
    assert short["median"] == pytest.approx(2.0) and (short["low"], short["high"]) == (0.5, 3.0)
    assert short["fastest_s"] == [0.3, 0.25] and short["fastest"] == pytest.approx(1.2)
    with pytest.raises(SystemExit):
        bench.main(["coding", "--entropy-repeats", "0"])
    assert "--entropy-repeats takes" in capsys.readouterr().err


def test_fastest_takes_the_shortest_of_the_runs_and_waits_for_each(monkeypatch):
    clock = iter([0.0, 5.0, 10.0, 12.0, 20.0, 29.0])  # runs of 5, 2 and 9 seconds
    monkeypatch.setattr(bench.time, "perf_counter", lambda: next(clock))
    calls = []
    assert bench._fastest(lambda *args: calls.append(args), 1, 2) == 2.0
    assert calls == [(1, 2)] * 3
