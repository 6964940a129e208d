"""The local model store: every model that wrote a `.mscm` file, findable by its fingerprint.

A `.mscm` file names its model by the first 16 bytes of the model's sha256
fingerprint (`bitstream.FileHeader.fingerprint`); `decompress` without
`--model` looks it up here.

Layout of the store directory (`$MSCM_JAX_MODELS`, default
`$XDG_CACHE_HOME/mscm-jax/models`, i.e. `~/.cache/mscm-jax/models`):

    <fingerprint>.mscm-model   the exported model (64 hex digits: its full sha256 fingerprint)
    <fingerprint>.json         its metadata: fingerprint, config, schedule, size, source,
                               added (UTC), stored_as (hard link, copy or export)

One pair per model, no shared index: writers never read-modify-write a common
file, so two processes adding models at once cannot lose each other's entry.
Every file is written under a unique temporary name in the store directory
(`.<name>.<pid>.<random>.tmp<suffix>`, hidden from listings), flushed and fsynced, then
published with `os.replace` (atomic on POSIX): a reader sees the whole old
file, the whole new one, or none, never half of one. Two processes adding the
same model publish identical bytes; the last rename wins.

Adding a `.mscm-model` file costs no disk when the store is on the same file
system: the entry is a hard link to the same inode (a copy otherwise).
Re-exporting to that path later (an atomic replace) leaves the stored inode
as it was; editing the file in place would change the entry too, which the
fingerprint check on load then refuses.

Loading an entry verifies it: `Codec.load` checks the file's structure and
recomputes the fingerprint of its parameters, and that fingerprint must equal
the entry's name. A damaged or renamed entry is a `CorruptEntryError`, never
a half-read model.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path

STORE_ENV = "MSCM_JAX_MODELS"
# Tests only: seconds to wait between writing a temporary file and publishing it,
# so that concurrent writers provably overlap.
WRITE_DELAY_ENV = "MSCM_JAX_STORE_WRITE_DELAY"
MODEL_SUFFIX = ".mscm-model"  # = codec.MODEL_FILE_SUFFIX (not imported: listing needs no JAX)
FINGERPRINT_RE = re.compile(r"[0-9a-f]{64}")
ADD_HINT = "add it with `mscm-jax models add PATH` (a training workdir or .mscm-model file) or pass --model"
STALE_TEMP_SECONDS = 24 * 3600  # temporary files of killed writers are removed after a day


class ModelStoreError(ValueError):
    """A store operation that cannot be done; the message says why and what to do."""


class ModelNotFoundError(ModelStoreError):
    """No stored model has the fingerprint asked for."""


class CorruptEntryError(ModelStoreError):
    """A store entry that is damaged or holds another model than its name says."""


def default_store_dir() -> Path:
    """`$MSCM_JAX_MODELS`, else `$XDG_CACHE_HOME/mscm-jax/models`, else `~/.cache/mscm-jax/models`."""
    if os.environ.get(STORE_ENV):
        return Path(os.environ[STORE_ENV]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "mscm-jax" / "models"


@dataclasses.dataclass(frozen=True)
class StoredModel:
    """One store entry as its metadata describes it (not verified: `ModelStore.load` verifies)."""

    fingerprint: str
    path: Path
    size: int
    config: dict | None = None  # ModelConfig.to_dict(); None when the metadata is missing or damaged
    schedule: str = ""
    source: str = ""
    added: str = ""
    stored_as: str = ""
    problem: str = ""  # why the metadata could not be read ("" when it was)

    @property
    def short(self) -> str:
        return self.fingerprint[:16]

    def describe(self) -> str:
        """transform, N, M, K of the config ("?" without metadata)."""
        c = self.config
        if not c:
            return "?"
        n, m, k = (c.get(key, "?") for key in ("N", "M", "num_mixtures"))
        return f"{c.get('transform', '?')} N={n} M={m} K={k}"


def _pause_before_publish() -> None:
    """Sleeps $MSCM_JAX_STORE_WRITE_DELAY seconds (tests: makes concurrent writers overlap)."""
    delay = float(os.environ.get(WRITE_DELAY_ENV, "0") or 0)
    if delay > 0:
        time.sleep(delay)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not every platform opens directories
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ModelStore:
    """A directory of models named by fingerprint (see the module docstring)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root) if root is not None else default_store_dir()
        self._loaded: dict = {}  # fingerprint -> Codec, verified once per store object

    # -- paths and listing ------------------------------------------------------

    def model_path(self, fingerprint: str) -> Path:
        return self.root / (fingerprint + MODEL_SUFFIX)

    def meta_path(self, fingerprint: str) -> Path:
        return self.root / (fingerprint + ".json")

    def fingerprints(self) -> list[str]:
        """Full fingerprints of the stored model files, sorted."""
        if not self.root.is_dir():
            return []
        names = (p.name.removesuffix(MODEL_SUFFIX) for p in self.root.glob("*" + MODEL_SUFFIX))
        return sorted(n for n in names if FINGERPRINT_RE.fullmatch(n))

    def contains(self, fingerprint: str) -> bool:
        return self.model_path(fingerprint).is_file()

    def entry(self, fingerprint: str) -> StoredModel:
        """The entry of a full fingerprint, from its metadata (ModelNotFoundError if not stored)."""
        path = self.model_path(fingerprint)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise ModelNotFoundError(f"no model {fingerprint[:16]} in the store {self.root}") from None
        try:
            meta = json.loads(self.meta_path(fingerprint).read_text())
            if not isinstance(meta, dict) or meta.get("fingerprint") != fingerprint:
                raise ValueError("it describes another model")
        except FileNotFoundError:
            return StoredModel(fingerprint, path, size, problem="(no metadata: `models add` the model again)")
        except (ValueError, OSError) as e:
            return StoredModel(fingerprint, path, size, problem=f"(damaged metadata: {e})")
        return StoredModel(
            fingerprint, path, size, config=meta.get("config"), schedule=str(meta.get("schedule", "")),
            source=str(meta.get("source", "")), added=str(meta.get("added", "")),
            stored_as=str(meta.get("stored_as", "")),
        )  # fmt: skip

    def entries(self) -> list[StoredModel]:
        """Every stored model, sorted by fingerprint."""
        out = []
        for fingerprint in self.fingerprints():
            try:
                out.append(self.entry(fingerprint))
            except ModelNotFoundError:  # removed meanwhile
                continue
        return out

    def resolve(self, prefix: str, hint: str = ADD_HINT) -> str:
        """The full fingerprint of a stored model from a unique prefix (hex, any case); `hint` ends
        the message when none matches."""
        prefix = prefix.strip().lower()
        if not prefix or not re.fullmatch(r"[0-9a-f]+", prefix):
            raise ModelStoreError(f"{prefix!r} is not a fingerprint (hex digits)")
        matches = [f for f in self.fingerprints() if f.startswith(prefix)]
        if not matches:
            raise ModelNotFoundError(f"no model with fingerprint {prefix} in the store {self.root}; {hint}")
        if len(matches) > 1:
            shown = ", ".join(m[:16] for m in matches[:5]) + (", ..." if len(matches) > 5 else "")
            raise ModelStoreError(
                f"fingerprint prefix {prefix} is ambiguous: {len(matches)} stored models match "
                f"({shown}); give more digits"
            )
        return matches[0]

    # -- loading ----------------------------------------------------------------

    def load(self, prefix: str):
        """The verified `Codec` of a stored model (CorruptEntryError if the entry is damaged).

        `prefix` is a unique prefix of its fingerprint, e.g. the 32 hex digits a
        `.mscm` header holds. Each model is loaded and verified once per store object.
        """
        from mscm_jax.coding.codec import Codec

        fingerprint = self.resolve(prefix)
        if fingerprint in self._loaded:
            return self._loaded[fingerprint]
        path = self.model_path(fingerprint)
        remedy = f"remove it with `mscm-jax models remove {fingerprint[:16]}` and add the model again"
        try:
            codec = Codec.load(path)
        except FileNotFoundError:
            raise ModelNotFoundError(
                f"no model {fingerprint[:16]} in the store {self.root}; {ADD_HINT}"
            ) from None
        except Exception as e:  # any failure to read it back: damaged, never half-used
            raise CorruptEntryError(f"stored model {path} is damaged ({e}); {remedy}") from None
        if codec.fingerprint != fingerprint:
            raise CorruptEntryError(
                f"stored model {path} holds another model (fingerprint {codec.fingerprint[:16]}, "
                f"not {fingerprint[:16]}: renamed or replaced); {remedy}"
            )
        self._loaded[fingerprint] = codec
        return codec

    def load_for_file(self, data: bytes):
        """The verified `Codec` of the model that wrote the `.mscm` bytes `data` (by its header)."""
        from mscm_jax.coding import bitstream

        header, _ = bitstream.unpack(data)
        return self.load(header.fingerprint.hex())

    # -- writing ----------------------------------------------------------------

    def _publish(self, final: Path, write: Callable[[Path], None]) -> None:
        """write(tmp) to a unique temporary file in the store, fsync it, then os.replace it to `final`."""
        self.root.mkdir(parents=True, exist_ok=True)
        # Unique to this writer (pid and random digits); `write` creates it.
        tmp = self.root / f".{final.name}.{os.getpid()}.{secrets.token_hex(6)}.tmp{final.suffix}"
        try:
            write(tmp)
            fd = os.open(tmp, os.O_RDONLY)  # fsync needs no write access (a linked file may be read-only)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            _pause_before_publish()
            os.replace(tmp, final)
        finally:
            # After a failure; or after a rename that did nothing because tmp and final were
            # already hard links of one file (POSIX rename(2)), as when two writers link one model.
            tmp.unlink(missing_ok=True)
        _fsync_dir(self.root)

    def _write_metadata(self, codec, size: int, source: str, stored_as: str) -> None:
        meta = {
            "fingerprint": codec.fingerprint,
            "config": codec.config.to_dict(),
            "schedule": codec.schedule.name,
            "size": size,
            "source": source,
            "added": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "stored_as": stored_as,
        }
        text = json.dumps(meta, indent=2, sort_keys=True, default=list) + "\n"
        self._publish(self.meta_path(codec.fingerprint), lambda tmp: tmp.write_text(text))

    def _remove_stale_temps(self) -> None:
        now = time.time()
        for tmp in self.root.glob(".*.tmp.*"):
            try:
                if now - tmp.stat().st_ctime > STALE_TEMP_SECONDS:  # ctime: a new link sets it
                    tmp.unlink()
            except OSError:
                continue

    def add_codec(
        self, codec, source: str = "", model_file: str | os.PathLike | None = None
    ) -> tuple[StoredModel, str]:
        """Stores `codec`'s model unless it is stored already; returns (entry, what was done).

        What was done: `already stored` (nothing written), `hard link` or `copy`
        of `model_file` (an exported file of this very model, verified before it
        is published), or `export` of the codec into the store.
        """
        fingerprint = codec.fingerprint
        source = source or codec.source
        final = self.model_path(fingerprint)
        if final.is_file():
            if not self.meta_path(fingerprint).is_file():  # a writer was killed between the two files
                self._write_metadata(codec, final.stat().st_size, source, "unknown")
            return self.entry(fingerprint), "already stored"
        self.root.mkdir(parents=True, exist_ok=True)
        self._remove_stale_temps()
        if model_file is not None:
            how = {"value": "hard link"}

            def link_or_copy(tmp: Path) -> None:
                try:
                    os.link(model_file, tmp)
                except OSError:  # another file system (EXDEV), or links not allowed
                    shutil.copyfile(model_file, tmp)
                    how["value"] = "copy"
                self._verify(tmp, fingerprint)

            self._publish(final, link_or_copy)
            stored_as = how["value"]
        else:
            self._publish(final, lambda tmp: self._export(codec, tmp, fingerprint))
            stored_as = "export"
        self._write_metadata(codec, final.stat().st_size, source, stored_as)
        return self.entry(fingerprint), stored_as

    @staticmethod
    def _export(codec, tmp: Path, fingerprint: str) -> None:
        codec.export(tmp)
        ModelStore._verify(tmp, fingerprint)

    @staticmethod
    def _verify(path: Path, fingerprint: str) -> None:
        """Loads `path` and checks it holds the model `fingerprint` (before it is published)."""
        from mscm_jax.coding.codec import Codec

        try:
            found = Codec.load(path).fingerprint
        except Exception as e:
            raise ModelStoreError(f"cannot store the model: {e}") from None
        if found != fingerprint:
            raise ModelStoreError(
                f"cannot store the model: its file holds fingerprint {found[:16]}, not {fingerprint[:16]} "
                "(was it replaced meanwhile?)"
            )

    def add(self, path: str | os.PathLike) -> tuple[StoredModel, str]:
        """Stores the model of a training workdir or `.mscm-model` file (see `add_codec`)."""
        from mscm_jax.coding.codec import Codec

        codec = Codec.load(path)
        is_file = os.path.isfile(path)
        return self.add_codec(codec, source=os.path.abspath(path), model_file=path if is_file else None)

    def remove(self, prefix: str) -> StoredModel:
        """Removes the entry of a unique fingerprint prefix; returns what it was."""
        fingerprint = self.resolve(prefix, hint="`mscm-jax models` lists what it holds")
        entry = self.entry(fingerprint)
        self.model_path(fingerprint).unlink(missing_ok=True)
        self.meta_path(fingerprint).unlink(missing_ok=True)
        _fsync_dir(self.root)
        return entry


def format_size(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return ""


def listing_lines(entries: list[StoredModel]) -> list[str]:
    """The `mscm-jax models` table: short fingerprint, config, schedule, size, added, source."""
    head = (
        f"{'fingerprint':<18}{'config':<28}{'schedule':<16}{'size':>10}  {'stored as':<11}{'added':<27}source"
    )
    lines = [head]
    for e in entries:
        lines.append(
            f"{e.short:<18}{e.describe():<28}{e.schedule or '?':<16}{format_size(e.size):>10}  "
            f"{e.stored_as or '?':<11}{e.added or '?':<27}{e.source or e.problem or '?'}"
        )
    return lines
