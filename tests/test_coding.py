"""The pure coding layer: tables, escapes, exact stream round trips."""

import numpy as np
import pytest
from scipy.special import ndtr

from mscm_jax import coding


def _models(rng, count, k):
    means = rng.normal(size=(count, k)) * 2
    scales = np.exp(rng.normal(size=(count, k)) - 1)
    weights = rng.dirichlet(np.ones(k), size=count)
    return coding.ElementModels.from_arrays(means, scales, weights)


def _round_trip(offsets, models):
    encoder = coding.new_encoder()
    coding.encode_offsets(encoder, offsets, models)
    data = coding.finish(encoder)
    decoder = coding.new_decoder(data, "test")
    decoded = coding.decode_offsets(decoder, models)
    coding.check_consumed(decoder, "test")
    return data, decoded


@pytest.mark.parametrize("k", [1, 3])
def test_every_value_is_encodable_including_far_outliers(k):
    rng = np.random.default_rng(k)
    models = _models(rng, 5000, k)
    offsets = np.round(rng.normal(size=5000) * models.scales[:, 0] + models.means[:, 0]).astype(np.int64)
    offsets[[3, 10, 11, 12]] = [1000, -70000, 4096 + 13, 2**23]  # escapes of 10, 17, 13 and 24 bits
    data, decoded = _round_trip(offsets, models)
    np.testing.assert_array_equal(decoded, offsets)
    assert 8 * len(data) < 5000 * 6  # the outliers do not blow up the rate


def test_values_beyond_the_escape_range_are_an_error_not_a_clip():
    models = _models(np.random.default_rng(0), 3, 2)
    with pytest.raises(coding.CodingError, match="codable range"):
        _round_trip(np.array([0, 2**25, 0]), models)


def test_table_widths_follow_the_parameters():
    widths = coding.table_half_widths(
        means=np.array([[0.0, 0.0, 3.0, 0.0, 0.0]]), scales=np.array([[0.11, 2.0, 0.2, 500.0, 1 / 6]])
    )  # (K = 1, E = 5)
    np.testing.assert_array_equal(widths, [1, 16, 8, coding.MAX_HALF_WIDTH, 1])


def test_coding_parameters_quantize_and_centre():
    means, scales = np.array([[0.3001, 2.7], [-4.2, 7.0]]), np.array([[0.5, 1.0], [0.2, 0.2]])  # (E, K)
    weights = np.array([[0.5, 0.5], [1.0, 0.0]])
    packed = np.asarray(coding.coding_parameters(means.T, scales.T, weights.T, round_centre=True))
    centre, half_width, rel = packed[0], packed[1], packed[2:4].T
    np.testing.assert_array_equal(
        centre, [2.0, -4.0]
    )  # mixture means 1.5 and -4.2 (weight 2^-14 on 7), rounded
    np.testing.assert_array_equal(rel * 1024, np.round(rel * 1024))  # on the 2^-10 grid
    np.testing.assert_allclose(rel[0], [0.3001 - 2, 0.7], atol=2**-11)
    np.testing.assert_array_equal(half_width, [8, 16])  # reach 0.7 + 6 and 11 + 1.2
    assert packed[7, 1] == np.float32(2.0**-14 / (1 + 2.0**-14))  # a zero weight keeps the smallest grid step


def _reference_pmf(half_width, models):
    """float64 normal CDFs: what the float32 tables must match."""
    edges = np.arange(-half_width, half_width) + 0.5
    z = (edges[None, :, None] - models.means[:, None, :].astype(np.float64)) / models.scales[:, None, :]
    cdf = np.einsum("erk,ek->er", ndtr(z), models.weights.astype(np.float64))
    return np.diff(
        np.concatenate([np.zeros((len(models), 1)), cdf, np.ones((len(models), 1))], axis=1), axis=1
    )


@pytest.mark.parametrize("half_width, count", [(1, 700), (8, 700), (16, 3456), (64, 700)])
def test_mixture_tables_match_float64_and_keep_their_tails(half_width, count):
    # 700 rows: one padded piece; 3456 at T = 16: two pieces (3072 + 384), the second padded.
    models = _models(np.random.default_rng(half_width), count, 3)
    pmf, reference = coding.mixture_pmf(half_width, models), _reference_pmf(half_width, models)
    assert pmf.dtype == np.float32 and pmf.shape == (count, 2 * half_width + 1)
    assert pmf.flags.c_contiguous  # constriction reads a strided view's memory as if contiguous
    np.testing.assert_allclose(pmf, reference, atol=3e-7)
    tails = (reference > 1e-30) & (reference < 1e-4)  # bins where a difference of CDFs would be all noise
    assert np.median(np.abs(pmf[tails] / reference[tails] - 1)) < 1e-4


def test_mixture_tables_fold_tails_into_the_end_bins():
    models = coding.ElementModels.from_arrays(
        np.array([[0.3, 5.0]]), np.array([[0.5, 2.0]]), np.array([[0.5, 0.5]])
    )
    pmf = coding.mixture_pmf(2, models)
    np.testing.assert_allclose(pmf.sum(1), 1.0, rtol=1e-6)
    assert pmf[0, -1] > 0.3  # the component at 5 sits in the last (folded) bin


def test_rate_is_close_to_the_ideal_information_content():
    rng = np.random.default_rng(1)
    models = _models(rng, 20000, 3)
    component = (rng.random(20000)[:, None] > np.cumsum(models.weights, 1)).sum(1)
    pick = np.arange(20000), component
    offsets = np.round(models.means[pick] + models.scales[pick] * rng.normal(size=20000)).astype(np.int64)
    t = coding.MAX_HALF_WIDTH
    pmf = coding.mixture_pmf(t, models)
    ideal = -np.log2(pmf[np.arange(20000), np.clip(offsets, -t, t) + t]).sum()
    data, _ = _round_trip(offsets, models)
    assert abs(8 * len(data) - ideal) < 0.005 * ideal + 64


def test_empty_streams_and_wrong_lengths():
    models = _models(np.random.default_rng(0), 0, 3)
    data, decoded = _round_trip(np.zeros(0, np.int64), models)
    assert data == b"" and decoded.size == 0
    with pytest.raises(coding.CodingError, match="multiple of 4"):
        coding.new_decoder(b"abc", "stage 1")


def test_a_stream_decoded_with_the_wrong_tables_is_detected():
    rng = np.random.default_rng(2)
    models = _models(rng, 3000, 3)
    offsets = np.round(models.means[:, 0]).astype(np.int64)
    encoder = coding.new_encoder()
    coding.encode_offsets(encoder, offsets, models)
    decoder = coding.new_decoder(coding.finish(encoder), "stage")
    other = _models(rng, 3000, 3)
    try:
        with coding.invalid_data_as_coding_error("stage"):
            decoded = coding.decode_offsets(decoder, other)
    except coding.CodingError:
        return  # constriction itself found the words invalid under these tables: detected
    consumed = decoder.maybe_exhausted()
    assert not consumed or coding.symbol_crc(decoded) != coding.symbol_crc(offsets)


def test_channel_tables_round_trip():
    tables = coding.ChannelTables(4, np.full((5, 9), 1 / 9, np.float32))  # uniform over 9 bins
    offsets = np.random.default_rng(3).integers(-30, 30, size=(7, 5))
    encoder = coding.new_encoder()
    tables.encode(encoder, offsets)
    decoder = coding.new_decoder(coding.finish(encoder), "z")
    np.testing.assert_array_equal(tables.decode(decoder, 7), offsets)
    coding.check_consumed(decoder, "z")


@pytest.mark.parametrize("half_width", [1, 4, 64])
@pytest.mark.parametrize("count", [1, 255, 700, 3456, 18432, 147456, 40000])
def test_table_pieces_cover_the_elements_in_few_padded_sizes(count, half_width):
    pieces = coding._table_pieces(count, half_width)
    assert [p[0] for p in pieces] == [0] + [p[1] for p in pieces[:-1]] and pieces[-1][1] == count
    budget = coding.PIECE_CALL_BINS // (2 * half_width + 1)
    for start, stop, size in pieces:
        assert size in coding.PIECE_SIZES and stop - start <= size
        assert size == 256 or size - (stop - start) <= max(budget, (count - start) // 8)
