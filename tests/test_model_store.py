"""The model store: files decode without --model; entries verified; writes atomic, safe concurrently."""

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from conftest import untrained_workdir
from PIL import Image

from mscm_jax.cli import main
from mscm_jax.coding import model_store
from mscm_jax.coding.codec import Codec
from mscm_jax.coding.model_store import CorruptEntryError, ModelNotFoundError, ModelStore, ModelStoreError
from mscm_jax.model.compression_model import ModelConfig, init_model
from mscm_jax.tools import torch_import
from mscm_jax.training.data import load_sample

CONFIG = ModelConfig(transform="mbt2018", N=4, M=4, num_mixtures=1, schedule="checkerboard")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two exported tiny models of one config (seeds 0 and 1: two fingerprints), and their codecs."""
    folder = tmp_path_factory.mktemp("models")
    out = []
    for seed in (0, 1):
        codec = Codec(CONFIG, init_model(CONFIG, jax.random.PRNGKey(seed))[1])
        path = folder / f"m{seed}.mscm-model"
        codec.export(path)
        out.append((path, codec))
    assert out[0][1].fingerprint != out[1][1].fingerprint
    return out


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A training workdir holding one checkpoint of the tiny config at initialization (no training)."""
    overrides = ["--config.model.num_mixtures=1", "--config.model.schedule=checkerboard"]
    return untrained_workdir(tmp_path_factory.mktemp("wd") / "run", overrides, seed=3)


@pytest.fixture
def store(tmp_path, monkeypatch) -> ModelStore:
    """An empty store, also the CLI's (through $MSCM_JAX_MODELS)."""
    monkeypatch.setenv(model_store.STORE_ENV, str(tmp_path / "store"))
    return ModelStore()


@pytest.fixture(scope="module")
def photo_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    Image.fromarray(load_sample("chelsea")[40:104, 60:156]).save(path)  # 64x96
    return path


def test_store_directory_honours_env_and_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv(model_store.STORE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert model_store.default_store_dir() == tmp_path / "xdg" / "mscm-jax" / "models"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert model_store.default_store_dir() == tmp_path / "home" / ".cache" / "mscm-jax" / "models"
    monkeypatch.setenv(model_store.STORE_ENV, str(tmp_path / "mine"))
    assert ModelStore().root == tmp_path / "mine"


def test_a_model_file_is_added_as_a_hard_link_once(store, models, capsys):
    path, codec = models[0]
    entry, how = store.add(path)
    assert how == "hard link" and entry.fingerprint == codec.fingerprint
    stored = store.model_path(codec.fingerprint)
    assert stored.name == codec.fingerprint + ".mscm-model"
    assert os.stat(stored).st_ino == os.stat(path).st_ino  # no extra disk
    meta = json.loads(store.meta_path(codec.fingerprint).read_text())
    assert meta["fingerprint"] == codec.fingerprint and ModelConfig.from_dict(meta["config"]) == CONFIG
    assert meta["schedule"] == "checkerboard" and meta["size"] == os.path.getsize(path)
    assert meta["source"] == str(path.resolve()) and meta["stored_as"] == "hard link" and meta["added"]
    # Adding it again writes nothing.
    before = {p.name: p.stat().st_mtime_ns for p in store.root.iterdir()}
    time.sleep(0.01)
    assert store.add(path)[1] == "already stored"
    assert {p.name: p.stat().st_mtime_ns for p in store.root.iterdir()} == before
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "1 model in" in out and codec.fingerprint[:16] in out and codec.fingerprint[:17] not in out
    assert "mbt2018 N=4 M=4 K=1" in out and "checkerboard" in out
    assert model_store.format_size(os.path.getsize(path)) in out
    assert str(path.resolve()) in out


def test_a_model_file_on_another_file_system_is_copied(store, models, monkeypatch):
    path, codec = models[1]

    def cross_device(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(model_store.os, "link", cross_device)
    entry, how = store.add(path)
    assert how == "copy" and entry.stored_as == "copy"
    assert os.stat(entry.path).st_ino != os.stat(path).st_ino
    assert entry.path.read_bytes() == path.read_bytes()
    assert store.load(codec.fingerprint[:8]).fingerprint == codec.fingerprint


def test_compress_stores_a_workdir_once_and_decompress_finds_each_files_model(
    store, models, workdir, photo_file, tmp_path, capsys
):
    m0, codec0 = models[0]
    assert main(["compress", str(photo_file), "--model", str(workdir), "-o", str(tmp_path / "w.mscm")]) == 0
    workdir_fp = Codec.load(workdir).fingerprint
    assert f"model store: {workdir_fp[:16]} export in" in capsys.readouterr().out
    assert store.entry(workdir_fp).source == str(workdir)
    assert main(["compress", str(photo_file), "--model", str(workdir), "-o", str(tmp_path / "w2.mscm")]) == 0
    assert f"model store: {workdir_fp[:16]} already stored" in capsys.readouterr().out
    assert main(["compress", str(photo_file), "--model", str(m0), "-o", str(tmp_path / "a.mscm")]) == 0
    assert f"{codec0.fingerprint[:16]} hard link" in capsys.readouterr().out
    # Three files of two models in one call, no --model.
    files = [str(tmp_path / n) for n in ("w.mscm", "a.mscm", "w2.mscm")]
    assert main(["decompress", *files, "-o", str(tmp_path / "dec")]) == 0
    out = capsys.readouterr().out
    assert out.count("from the store") == 2  # each model loaded once
    for name, codec in (("w", Codec.load(workdir)), ("a", codec0)):
        want = codec.decompress((tmp_path / f"{name}.mscm").read_bytes()).image
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "dec" / f"{name}.png")), want)
    # --model overrides the store: the model file is used even with the store emptied.
    store.remove(codec0.fingerprint)
    args = ["decompress", files[1], "--model", str(m0), "-o", str(tmp_path / "dec2.png")]
    assert main(args) == 0 and (tmp_path / "dec2.png").exists()
    assert "from the store" not in capsys.readouterr().out


def test_a_missing_model_is_one_line_naming_the_fingerprint(store, models, photo_file, tmp_path, capsys):
    path, codec = models[1]
    encoded = tmp_path / "b.mscm"
    encoded.write_bytes(codec.compress(np.asarray(Image.open(photo_file))).data)
    assert main(["decompress", str(encoded), "-o", str(tmp_path / "out.png")]) == 2
    err = capsys.readouterr().err
    line = err.splitlines()[0]
    assert line.startswith(f"{encoded}: error: no model with fingerprint {codec.fingerprint[:32]}")
    assert "mscm-jax models add PATH" in line and "Traceback" not in err
    assert not (tmp_path / "out.png").exists()
    with pytest.raises(ModelNotFoundError):
        store.load_for_file(encoded.read_bytes())
    # Once added, the same command works.
    assert main(["models", "add", str(path)]) == 0
    assert main(["decompress", str(encoded), "-o", str(tmp_path / "out.png")]) == 0


def _damaged_entries(models) -> dict[str, bytes]:
    data = models[0][0].read_bytes()
    return {
        "truncated": data[: len(data) // 2],
        "garbled": data[: len(data) // 2] + bytes([data[len(data) // 2] ^ 0x10]) + data[len(data) // 2 + 1 :],
        "another model under this name": models[1][0].read_bytes(),
    }


@pytest.mark.parametrize("case", ["truncated", "garbled", "another model under this name"])
def test_corrupt_entries_are_refused(case, store, models, photo_file, tmp_path, capsys):
    codec = models[0][1]
    store.add_codec(codec)  # an export, not a link: the damage below must not reach the fixture's file
    stored = store.model_path(codec.fingerprint)
    stored.write_bytes(_damaged_entries(models)[case])
    with pytest.raises(CorruptEntryError, match=f"models remove {codec.fingerprint[:16]}"):
        store.load(codec.fingerprint)
    encoded = tmp_path / "a.mscm"
    encoded.write_bytes(codec.compress(np.asarray(Image.open(photo_file))).data)
    assert main(["decompress", str(encoded), "-o", str(tmp_path / "out.png")]) == 2
    err = capsys.readouterr().err
    expect = "holds another model" if case.startswith("another") else "is damaged"
    assert expect in err and str(stored) in err and "Traceback" not in err
    assert not (tmp_path / "out.png").exists()


def test_remove_by_unique_prefix_and_ambiguous_prefixes(store, models, capsys):
    for path, _ in models:
        store.add(path)
    fp0, fp1 = (codec.fingerprint for _, codec in models)
    # A third entry sharing fp0's first 20 digits (only the names matter for prefixes).
    twin = fp0[:20] + ("0" if fp0[20] != "0" else "1") + fp0[21:]
    os.link(store.model_path(fp0), store.model_path(twin))
    with pytest.raises(ModelStoreError, match=f"prefix {fp0[:12]} is ambiguous: 2 stored models"):
        store.resolve(fp0[:12])
    assert main(["models", "remove", fp0[:12]]) == 2
    assert "ambiguous" in capsys.readouterr().err and store.contains(fp0) and store.contains(twin)
    assert main(["models", "remove", fp0[:21].upper()]) == 0
    assert not store.contains(fp0) and not store.meta_path(fp0).exists() and store.contains(twin)
    assert main(["models", "remove", fp1[:6]]) == 0
    assert store.fingerprints() == [twin]
    with pytest.raises(ModelNotFoundError, match="models add PATH"):
        store.resolve(fp1[:6])
    assert main(["models", "remove", fp1[:6]]) == 2  # removing what is not there: no advice to add it
    err = capsys.readouterr().err
    assert "`mscm-jax models` lists what it holds" in err and "models add" not in err
    with pytest.raises(ModelStoreError, match="not a fingerprint"):
        store.resolve("xyz")


def test_export_and_import_torch_register_what_they_write(
    store, models, workdir, tmp_path, monkeypatch, capsys
):
    out = tmp_path / "w.mscm-model"
    assert main(["export", str(workdir), "-o", str(out)]) == 0
    fp = Codec.load(out).fingerprint
    assert os.stat(store.model_path(fp)).st_ino == os.stat(out).st_ino
    assert store.entry(fp).source == str(workdir)
    assert main(["export", str(workdir), "-o", str(tmp_path / "x.mscm-model"), "--no-store"]) == 0
    # import-torch straight to a model file (the checkpoint conversion replaced by a tiny model).
    _, codec1 = models[1]
    monkeypatch.setattr(torch_import, "load_state_dict", lambda path: {})
    monkeypatch.setattr(torch_import, "convert_state_dict", lambda arch, state: (CONFIG, codec1.params))
    (tmp_path / "ckpt.npz").write_bytes(b"")
    imported = tmp_path / "imported.mscm-model"
    args = ["import-torch", str(tmp_path / "ckpt.npz"), "--arch", "mbt2018", "-o", str(imported)]
    assert main(args) == 0
    assert f"{codec1.fingerprint[:16]} hard link" in capsys.readouterr().out
    assert os.stat(store.model_path(codec1.fingerprint)).st_ino == os.stat(imported).st_ino
    assert store.entry(codec1.fingerprint).source == str(tmp_path / "ckpt.npz")
    assert sorted(store.fingerprints()) == sorted([fp, codec1.fingerprint])


def test_a_write_is_published_whole_or_not_at_all(store, models, monkeypatch):
    path, codec = models[0]
    final = store.model_path(codec.fingerprint)
    seen = []

    def check_before_publish():  # runs between writing the temporary file and os.replace
        temps = [p for p in store.root.iterdir() if p.name.startswith(".")]
        seen.append((final.exists(), [p.stat().st_size for p in temps]))

    monkeypatch.setattr(model_store, "_pause_before_publish", check_before_publish)
    store.add_codec(codec)
    assert seen[0] == (False, [path.stat().st_size])  # the model: complete, not yet visible
    assert seen[1][0] is True and len(seen[1][1]) == 1  # then its metadata
    assert [p.name for p in store.root.iterdir() if p.name.startswith(".")] == []
    # A writer that fails midway leaves nothing behind, and nothing is listed.
    other = models[1][1]

    def broken_export(tmp):
        Path(tmp).write_bytes(b"MSCM-MODEL")
        raise OSError("disk full")

    monkeypatch.setattr(other, "export", broken_export)
    with pytest.raises(OSError, match="disk full"):
        store.add_codec(other)
    assert sorted(p.name for p in store.root.iterdir()) == sorted([final.name, final.stem + ".json"])


def test_a_file_is_verified_before_it_is_published(store, models):
    codec0, path1 = models[0][1], models[1][0]
    with pytest.raises(ModelStoreError, match=f"holds fingerprint .* not {codec0.fingerprint[:16]}"):
        store.add_codec(codec0, model_file=path1)  # the file of another model
    assert not store.root.exists() or list(store.root.iterdir()) == []


def test_concurrent_processes_lose_nothing(store, models, tmp_path):
    """Three processes add at once, all inside each other's write windows: two models, one twice."""
    env = {**os.environ, model_store.STORE_ENV: str(store.root), model_store.WRITE_DELAY_ENV: "2"}
    paths = [models[0][0], models[1][0], models[0][0]]
    procs = [
        subprocess.Popen([sys.executable, "-m", "mscm_jax.cli", "models", "add", str(p)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for p in paths
    ]  # fmt: skip
    results = [p.communicate(timeout=300) for p in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
        assert " in " in out
    listing = subprocess.run([sys.executable, "-m", "mscm_jax.cli", "models"], env=env, capture_output=True,
                             text=True, timeout=120)  # fmt: skip
    assert listing.returncode == 0, listing.stderr
    assert "2 models in" in listing.stdout
    for _, codec in models:
        assert codec.fingerprint[:16] in listing.stdout
        assert store.load(codec.fingerprint).fingerprint == codec.fingerprint
        assert ModelConfig.from_dict(store.entry(codec.fingerprint).config) == CONFIG
    assert [p.name for p in store.root.iterdir() if p.name.startswith(".")] == []
