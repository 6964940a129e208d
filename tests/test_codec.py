"""The codec: exact round trips for every schedule, real rates, errors, fuzzing, exported models."""

import dataclasses
import functools
import struct
import subprocess
import sys
import time
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from mscm_jax.coding import bitstream, programs, rans_kernel
from mscm_jax.coding import codec as codec_module
from mscm_jax.coding.codec import Codec
from mscm_jax.coding.integer_cdf import CodingError
from mscm_jax.coding.model_file import ModelFileError
from mscm_jax.model.compression_model import ModelConfig, init_model
from mscm_jax.model.entropy_models import factorized_likelihood
from mscm_jax.model.schedules import BUILTIN_PATTERNS
from mscm_jax.model.transforms import spread_latents
from mscm_jax.training.data import load_sample

PHOTO = load_sample("chelsea")[:100, :140]  # odd size: a 2 x 3 z, a 8 x 12 latent
REJECTED = (bitstream.FormatError, CodingError)


@functools.cache
def codec_for(schedule: str, mixtures: int = 3, rounding: str = "y", transform: str = "mbt2018") -> Codec:
    config = ModelConfig(transform=transform, N=8, M=8, num_mixtures=mixtures, schedule=schedule,
                         rounding=rounding)  # fmt: skip
    _, params = init_model(config, jax.random.PRNGKey(0))
    # A fresh analysis transform outputs ~0; scale it so that symbols span several values.
    return Codec(config, spread_latents(params, transform, 40.0))


def _model_output(codec, image):
    return codec.estimate(image.astype(np.float32) / 255.0)


@pytest.mark.parametrize("schedule", list(BUILTIN_PATTERNS))
def test_round_trip_is_exact_and_equals_the_model(schedule):
    codec = codec_for(schedule)
    result = codec.compress(PHOTO)
    decoded = codec.decompress(result.data)
    np.testing.assert_array_equal(decoded.y_hat, result.y_hat)
    assert np.abs(result.y_hat).max() >= 2  # not a trivial all-zero latent
    np.testing.assert_array_equal(codec.decode_latent(result.data)[0], result.y_hat)
    model = _model_output(codec, PHOTO)
    np.testing.assert_array_equal(decoded.y_hat, np.asarray(model.y_hat[0]))
    np.testing.assert_allclose(decoded.x_hat, np.asarray(model.x_hat[0]), atol=1e-5)
    assert decoded.image.shape == PHOTO.shape and decoded.image.dtype == np.uint8
    assert len(result.stage_bits) == model.bits_per_stage.shape[1]
    # One interleaved stream: its ideal content under the integer models plus the lanes' flush.
    assert 0 <= 8 * result.payload_bytes - result.ideal_bits <= 8 * result.flush_bytes + 16


def test_cheng2020_family_on_another_odd_size():
    codec = codec_for("mscm2x2", transform="cheng2020-attn")
    image = load_sample("coffee")[:67, :101]
    result = codec.compress(image)
    decoded = codec.decompress(result.data)
    np.testing.assert_array_equal(decoded.y_hat, np.asarray(_model_output(codec, image).y_hat[0]))
    assert decoded.image.shape == (67, 101, 3)


def test_round_trip_where_the_patches_overhang_the_latent_in_both_directions():
    """3x3 patches on an 8 x 8 latent: each stage's elements are a subset of its grid, not a prefix."""
    codec = codec_for("mscm3x3")
    image = PHOTO[:100, :100]
    result = codec.compress(image)
    decoded = codec.decompress(result.data)
    np.testing.assert_array_equal(decoded.y_hat, np.asarray(_model_output(codec, image).y_hat[0]))
    assert decoded.y_hat.shape[:2] == (8, 8)


def test_y_minus_mean_rounding_round_trips_and_stays_on_the_means_grid():
    codec = codec_for("checkerboard", 1, "y_minus_mean")
    result = codec.compress(PHOTO)
    decoded = codec.decompress(result.data)
    np.testing.assert_array_equal(decoded.y_hat, result.y_hat)
    assert np.abs(result.y_hat - np.round(result.y_hat)).max() > 0.01  # means really are added back
    # Means are quantized to 2^-10 before use: the latent matches the model's within that grid.
    np.testing.assert_allclose(decoded.y_hat, np.asarray(_model_output(codec, PHOTO).y_hat[0]), atol=2**-10)


def test_unrolled_coder_loops_write_and_read_the_same_bytes():
    """Several coder steps per loop iteration (`unroll`, for accelerators) change no bit."""
    base = codec_for("mscm2x2")
    unrolled = Codec(base.config, base.params, unroll=5)  # the loops have 96 steps per stage, 24 for z
    result = base.compress(PHOTO)
    assert unrolled.compress(PHOTO).data == result.data
    np.testing.assert_array_equal(unrolled.decode_latent(result.data)[0], result.y_hat)
    with pytest.raises(ValueError, match="unroll must be a positive integer"):
        Codec(base.config, base.params, unroll=0)


def test_the_decode_kernel_reads_the_same_latent(monkeypatch):
    """y's stages decoded in one Pallas kernel each (`rans_kernel`; interpreted on a CPU)."""
    base = codec_for("mscm4x4-paper")
    result = base.compress(PHOTO)
    traced, decode_segment = [], rans_kernel.decode_mixture_segment  # traced here, not loaded from disk

    def kernel_decode(*args):
        traced.append(args[2].shape)
        return decode_segment(*args)

    monkeypatch.setattr(programs, "artifact_path", lambda *args: None)
    monkeypatch.setattr(rans_kernel, "decode_mixture_segment", kernel_decode)
    kernel = Codec(base.config, base.params, decode_kernel=True)
    np.testing.assert_array_equal(kernel.decode_latent(result.data)[0], result.y_hat)
    assert traced  # the stage program called the kernel
    with pytest.raises(ValueError, match="decode_kernel must be True or False"):
        Codec(base.config, base.params, decode_kernel="pallas")


@pytest.mark.parametrize("schedule", ["checkerboard", "mscm4x4-paper"])
def test_a_one_pixel_image(schedule):
    codec = codec_for(schedule)
    image = np.array([[[200, 30, 90]]], np.uint8)
    decoded = codec.decompress(codec.compress(image).data)
    assert decoded.image.shape == (1, 1, 3)


def test_grey_and_rgba_inputs_are_converted_with_a_notice():
    codec = codec_for("mscm2x2")
    grey = codec.compress(PHOTO[:, :, 0])
    rgba = codec.compress(np.concatenate([PHOTO, np.full((*PHOTO.shape[:2], 1), 7, np.uint8)], axis=2))
    assert "grayscale" in grey.notices[0] and "alpha" in rgba.notices[0]
    assert rgba.data == codec.compress(PHOTO).data
    with pytest.raises(ValueError, match="uint8"):
        codec.compress(PHOTO.astype(np.float32))
    with pytest.raises(ValueError, match="shape"):
        codec.compress(np.zeros((4, 4, 2), np.uint8))


def test_z_tables_are_the_factorized_density_around_the_median():
    codec = codec_for("mscm2x2")
    t = (codec.z_cdf.shape[1] - 2) // 2
    density = codec.params["params"]["entropy_bottleneck"]
    inner = np.arange(1 - t, t)[:, None] + np.asarray(codec._median)[None, :]
    expected = np.asarray(factorized_likelihood(density, jnp.asarray(inner, jnp.float32))).T
    freq = np.diff(codec.z_cdf, axis=1) / 2**16  # every bin >= 2^-16: within a few units of the density
    np.testing.assert_allclose(freq[:, 1:-1], expected, atol=(2 * t + 2) / 2**16)
    assert np.all(codec.z_cdf[:, -1] == 2**16) and np.all(freq > 0)


def _rewrite(data: bytes, edit) -> bytes:
    """`data` with `edit` applied to its body and the file checksum recomputed."""
    body = bytearray(data[:-4])
    edit(body)
    return bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))


def test_files_of_another_model_or_schedule_and_altered_payloads_are_errors():
    codec = codec_for("mscm2x2")
    data = codec.compress(PHOTO).data
    with pytest.raises(bitstream.FormatError, match="another model"):
        codec_for("mscm2x2", mixtures=2).decompress(data)
    with pytest.raises(bitstream.FormatError, match="another model"):
        codec_for("checkerboard").decompress(data)

    def flip_middle(body):
        body[len(body) - 40] ^= 0x10  # inside the last y stream

    with pytest.raises(CodingError):
        codec.decompress(_rewrite(data, flip_middle))


def test_fuzzed_files_are_all_rejected_cleanly_and_quickly():
    """Truncations, raw mutations and mutations with a recomputed file checksum.

    The last kind reaches the decoder's own checks (header limits, schedule,
    stream consumed exactly, symbol checksums). A mutation that decodes
    without error must give exactly the original image (it changed nothing
    the decoder reads); anything else is a silent corruption.
    """
    codec = codec_for("mscm2x2")
    data = codec.compress(PHOTO).data
    original = codec.decompress(data).image
    rng = np.random.default_rng(0)
    counts = {"rejected": 0, "identical": 0}
    slowest = 0.0
    start = time.perf_counter()

    def check(candidate: bytes) -> None:
        nonlocal slowest
        t0 = time.perf_counter()
        try:
            image = codec.decompress(candidate).image
        except REJECTED:
            counts["rejected"] += 1
        else:
            np.testing.assert_array_equal(image, original)
            counts["identical"] += 1
        slowest = max(slowest, time.perf_counter() - t0)

    for _ in range(500):
        check(data[: rng.integers(0, len(data))])
    for _ in range(500):
        mutated = bytearray(data)
        mutated[rng.integers(len(data))] ^= int(rng.integers(1, 256))
        check(bytes(mutated))
    for i in range(2000):

        def edit(body, i=i):
            for _ in range(1 + i % 3):
                where = int(rng.integers(len(body)))
                body[where] = int(rng.integers(256)) if i % 2 else body[where] ^ (1 << int(rng.integers(8)))

        check(_rewrite(data, edit))
    print(f"fuzz: {counts}, slowest {slowest:.3f} s, total {time.perf_counter() - start:.1f} s")
    assert counts["rejected"] >= 2900, counts


def test_payload_is_within_one_percent_of_the_estimate_on_a_trained_model(trained_workdir):
    codec = Codec.load(trained_workdir)
    for name in ("astronaut", "immunohistochemistry"):  # 512 x 512
        image = load_sample(name)
        result = codec.compress(image)
        estimate = float(_model_output(codec, image).bpp[0]) * image.shape[0] * image.shape[1]
        payload = 8 * result.payload_bytes
        change = 100 * (payload / estimate - 1)
        print(f"{name}: estimate {estimate:.0f} bits, payload {payload} bits ({change:+.2f} %), ideal under "
              f"the integer models {result.ideal_bits:.0f} bits, header {8 * result.header_bytes} bits, "
              f"flush {8 * result.flush_bytes} bits, {result.escapes} escapes")  # fmt: skip
        assert abs(payload - estimate) <= 0.01 * estimate
        np.testing.assert_array_equal(codec.decompress(result.data).y_hat, result.y_hat)


def test_exported_model_decodes_in_a_new_process_what_the_workdir_encoded(trained_workdir, tmp_path):
    codec = Codec.load(trained_workdir)
    encoded = tmp_path / "photo.mscm"
    encoded.write_bytes(codec.compress(PHOTO).data)
    model_file = tmp_path / "model.mscm-model"
    codec.export(model_file)
    out = tmp_path / "decoded.png"
    # The command, then what it imported: Pallas' Triton backend only loads for `decode_kernel`,
    # scipy.linalg (0.4 s, for jax.export's LAPACK handlers) only for programs that call LAPACK.
    script = (
        "import sys; from mscm_jax import cli; code = cli.main(sys.argv[1:]); "
        "print([m for m in ('jax.experimental.pallas.triton', 'scipy.linalg') if m in sys.modules]); "
        "sys.exit(code)"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, "decompress", str(encoded), "--model", str(model_file),
         "-o", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "[]"
    np.testing.assert_array_equal(np.asarray(Image.open(out)), codec.decompress(encoded.read_bytes()).image)
    loaded = Codec.load(model_file)
    assert loaded.fingerprint == codec.fingerprint and loaded.step == codec.step
    np.testing.assert_array_equal(loaded.z_cdf, codec.z_cdf)


def test_damaged_model_files_are_errors(tmp_path):
    codec = codec_for("mscm2x2")
    path = tmp_path / "m.mscm-model"
    codec.export(path)
    data = path.read_bytes()
    cases = {
        "truncated": data[: len(data) // 2],
        "bad magic": b"X" + data[1:],
        "newer": data[:12] + b"\x09" + data[13:],
        "flipped parameter": data[:-5000] + bytes([data[-5000] ^ 0x01]) + data[-4999:],
    }
    for name, damaged in cases.items():
        bad = tmp_path / f"{name}.mscm-model"
        bad.write_bytes(damaged)
        with pytest.raises(ModelFileError):
            Codec.load(bad)
    with pytest.raises(FileNotFoundError, match="workdir"):
        Codec.load(tmp_path / "missing.mscm-model")


def test_cli_compress_decompress_and_export(trained_workdir, tmp_path):
    def cli(*args):
        cmd = [sys.executable, "-m", "mscm_jax.cli", *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path)

    # A 16-bit greyscale PNG of chelsea's size (no new programs): reduced, not clipped, and said so.
    grey16 = load_sample("chelsea")[:, :, 1].astype(np.uint16) * 257
    # In a folder: its files are coded by their path inside it.
    (tmp_path / "in" / "sub").mkdir(parents=True)
    Image.fromarray(grey16).save(tmp_path / "in" / "sub" / "grey16.png")
    run = cli("compress", "chelsea", "astronaut", "in", "--model", str(trained_workdir), "-o", "out/",
              "--lanes", "5")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "files: coder 4 (float entropy networks)" in run.stdout
    assert "grey16.png: notice: 16-bit pixels reduced to 8 bits" in run.stdout
    assert "grey16.png: notice: grayscale image converted to RGB" in run.stdout
    assert (tmp_path / "out" / "sub" / "grey16.mscm").is_file()
    assert bitstream.unpack((tmp_path / "out" / "chelsea.mscm").read_bytes())[0].lanes == 5
    assert "bpp" in run.stdout and "tracing and compilation" in run.stdout and "stages" in run.stdout
    # What the files hold, from their headers; the compress above stored the model.
    run = cli("info", "out")
    assert run.returncode == 0, run.stderr
    chelsea = run.stdout[run.stdout.index("out/chelsea.mscm") :]
    size = (tmp_path / "out" / "chelsea.mscm").stat().st_size
    assert chelsea.startswith(f"out/chelsea.mscm: 451x300, {size} bytes")
    assert "in the store: mbt2018" in chelsea and "schedule mscm2x2 [[0, 1], [2, 3]]; coder 4" in chelsea
    assert "5 rANS lanes" in chelsea and run.stdout.count("format version 3") == 3
    assert cli("export", str(trained_workdir), "-o", "m.mscm-model").returncode == 0
    run = cli("decompress", "out", "--model", "m.mscm-model", "-o", "dec/")
    assert run.returncode == 0, run.stderr
    assert Image.open(tmp_path / "dec" / "chelsea.png").size == (451, 300)
    # Written at zlib's fastest level (4x faster than Pillow's default): the 2-bit level in the
    # stream's header (RFC 1950), 0 = fastest, after the first IDAT chunk's length and type.
    png = (tmp_path / "dec" / "chelsea.png").read_bytes()
    assert png[png.index(b"IDAT") + 5] >> 6 == 0
    assert Image.open(tmp_path / "dec" / "sub" / "grey16.png").size == (451, 300)
    run = cli("decompress", "out/chelsea.mscm", "-o", "tiled.png", "--tile-pixels", "16384")
    assert run.returncode == 0, run.stderr
    tiled, whole = (np.asarray(Image.open(tmp_path / p), int) for p in ("tiled.png", "dec/chelsea.png"))
    assert np.abs(tiled - whole).max() <= 1
    run = cli("decompress", "out/chelsea.mscm", "-o", "bad.png", "--tile-pixels", "100")
    assert run.returncode == 2 and "--tile-pixels: takes 0 (whole images) or at least 4096" in run.stderr
    assert "Traceback" not in run.stderr and not (tmp_path / "bad.png").exists()
    (tmp_path / "bad.mscm").write_bytes(b"MSCM\x02\x04" + bytes(40))
    run = cli("decompress", "bad.mscm", "--model", "m.mscm-model", "-o", "dec/")
    assert run.returncode == 2 and "checksum" in run.stderr and "Traceback" not in run.stderr
    run = cli("compress", "chelsea", "--model", str(trained_workdir), "-o", "out/")
    assert run.returncode == 2 and "--overwrite" in run.stderr
    # Two inputs of one name are refused before anything is coded, --overwrite or not.
    run = cli("compress", "astronaut", "x/astronaut.png", "--model", str(trained_workdir),
              "-o", "col/", "--overwrite")  # fmt: skip
    assert run.returncode == 2 and "would both write col/astronaut.mscm" in run.stderr
    assert not (tmp_path / "col").exists()
    run = cli("compress", "chelsea", "--model", str(trained_workdir), "-o", "new/", "--lanes", "0")
    assert run.returncode == 2 and "lanes must be an integer from 1 to 4096" in run.stderr
    assert not (tmp_path / "new").exists() and "Traceback" not in run.stderr


def test_result_accounting():
    codec = codec_for("mscm4x4-paper")
    result = codec.compress(PHOTO)
    assert result.header_bytes + result.payload_bytes == len(result.data)
    assert result.bpp == pytest.approx(8 * len(result.data) / (100 * 140))
    assert len(result.timings.stages) == 16 and result.timings.entropy_coding >= sum(result.timings.stages)
    assert 0 <= result.timings.outside <= result.timings.entropy_coding
    # The networks' share of the stages: without the coding of any stage, and not nothing.
    assert 0 < result.timings.parameters < sum(result.timings.stages)
    # What the lanes cost, from the final states at the stream's head: 48 - log2(x) bits each.
    head = np.frombuffer(bitstream.unpack(result.data)[1], "<u2")[: 2 * result.lanes].astype(np.float64)
    final_states = head[0::2] * 2**16 + head[1::2]
    assert result.lane_bits == pytest.approx(np.sum(48 - np.log2(final_states)))
    assert 16 * result.lanes <= result.lane_bits <= 32 * result.lanes
    assert abs(result.rounding_bits) <= 0.01 * result.ideal_bits + 16


def test_transforms_in_tiles_write_the_same_file_and_decode_it_alike():
    """Windows of 4096 pixels: y's 8 x 12 elements, one core each, in windows of 5 x 5 (synthesis),
    the image in windows of 128 x 128 pixels (analysis: whole z elements)."""
    codec = codec_for("hyperprior")
    whole, tiled = codec.with_tile_pixels(0), codec.with_tile_pixels(4096)
    expected = whole.compress(PHOTO)
    assert tiled.compress(PHOTO).data == expected.data
    a, b = whole.decompress(expected.data), tiled.decompress(expected.data)
    np.testing.assert_array_equal(b.y_hat, expected.y_hat)
    np.testing.assert_allclose(b.x_hat, a.x_hat, atol=1e-5)
    assert np.abs(b.image.astype(int) - a.image).max() <= 1
    for bad in (1, 4095, -4096, 4096.0, True):
        with pytest.raises(ValueError, match=r"tile_pixels must be 0 \(whole images\) or at least 4096"):
            codec.with_tile_pixels(bad)


def test_decoding_a_file_the_codec_wrote_compiles_no_program():
    """The encoder runs the decoder's programs with a stream buffer of the size the decoder uses."""
    codec = codec_for("hyperprior")
    data = codec.compress(PHOTO).data
    assert codec.decode_latent(data)[1].compile == 0


def test_a_stream_that_outgrows_the_usual_buffer_is_coded_again_into_the_largest(monkeypatch):
    """With the usual buffer shrunk to 1 bit a symbol (this file spends about 12): the same bytes,
    coded again into the largest buffer, and decoded from one of that size."""
    codec = codec_for("hyperprior")
    expected = codec.compress(PHOTO)
    monkeypatch.setattr(codec_module, "USUAL_STREAM_BITS", 1)
    result = codec.compress(PHOTO)
    assert result.data == expected.data and result.timings.hyper > 0
    np.testing.assert_array_equal(codec.decode_latent(result.data)[0], expected.y_hat)


def test_files_of_chosen_lanes_decode_and_bad_lanes_are_refused():
    codec = codec_for("hyperprior")
    default = codec.compress(PHOTO)
    for lanes in (1, 3):
        result = codec.with_lanes(lanes).compress(PHOTO)
        assert result.lanes == lanes and bitstream.unpack(result.data)[0].lanes == lanes
        np.testing.assert_array_equal(codec.decompress(result.data).y_hat, default.y_hat)
        assert 16 * lanes <= result.lane_bits <= 32 * lanes
    for bad in (0, 4097, 2.5, True, "8"):
        with pytest.raises(ValueError, match="lanes must be an integer from 1 to 4096"):
            codec.with_lanes(bad)


def test_sizes_of_one_bucket_share_the_stage_programs_and_files_record_their_step():
    """Size steps of 256 and 0 pixels: latents of 8 x 12 and 8 x 16 run on one 16 x 16 bucket, or
    each on its own. A file records its step; any codec decodes it with the file's."""
    bucketed = codec_for("mscm4x4-paper")
    exact = Codec(bucketed.config, bucketed.params, size_step=0)  # programs of its own
    images = (PHOTO, load_sample("coffee")[:90, :250])

    def stage_programs(codec):
        return {key for key in codec._compiled._cache if key[0] == "stage_step"}

    files = {codec: [codec.compress(images[0])] for codec in (exact, bucketed)}
    compiled = {codec: stage_programs(codec) for codec in files}
    for codec, results in files.items():
        results.append(codec.compress(images[1]))
        # The second size's stage program: the exact codec compiles its own, the bucketed none.
        assert len(stage_programs(codec) - compiled[codec]) == (codec is exact)
    compiled = {codec: stage_programs(codec) for codec in files}
    for image, bucket_file, exact_file in zip(images, files[bucketed], files[exact], strict=True):
        assert [bitstream.unpack(f.data)[0].size_step for f in (bucket_file, exact_file)] == [256, 0]
        np.testing.assert_array_equal(exact.decompress(bucket_file.data).y_hat, bucket_file.y_hat)
        np.testing.assert_array_equal(bucketed.decompress(exact_file.data).y_hat, exact_file.y_hat)
        np.testing.assert_array_equal(bucket_file.y_hat, _model_output(bucketed, image).y_hat[0])
    # Each decoded the other's files with the other's programs, of the file's step.
    added = {codec: stage_programs(codec) - compiled[codec] for codec in files}
    assert added[exact] and added[exact] <= compiled[bucketed] and added[bucketed] <= compiled[exact]
    assert bucketed._bucket((7, 9), 64) == (8, 12) and bucketed._bucket((7, 9), 0) == (7, 9)
    for bad in (-64, 32, 100, 4160, 64.0, True):
        with pytest.raises(ValueError, match=r"size_step must be 0 \(.*\) or a multiple of 64 pixels"):
            exact.with_size_step(bad)


def test_size_steps_an_encoder_could_not_have_written_are_refused_before_any_allocation():
    for schedule, step, message in [
        ("mscm4x4-paper", 4096, "size step of 4096 pixels makes its stages run on 4096x4096 pixels"),
        ("serial", 64, r"size step of 64 pixels; this model's files have multiples of 64 \(serial: 0\)"),
    ]:
        codec = codec_for(schedule)
        header, payload = bitstream.unpack(codec.compress(PHOTO).data)
        data = bitstream.pack(dataclasses.replace(header, size_step=step), payload)
        with pytest.raises(bitstream.FormatError, match=message):
            codec.decompress(data, max_pixels=2**22)
