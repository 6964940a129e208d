"""Training: one readable loop over a jitted, data-parallel train step.

Loss (MSE models, Minnen 2018 / Cheng 2020): `lambda * 255^2 * MSE + bpp`,
with MSE on [0, 1] images and bpp the estimated bits per pixel.

A workdir holds `config.json` (what the run trains), `checkpoints/` (Orbax:
state and loader state, every `checkpoint_every` steps, the last
`keep_checkpoints` kept), `metrics.jsonl` and TensorBoard events in `tb/`.
Re-running the same command resumes from the latest checkpoint, exactly:
batches are a pure function of (seed, step) and the noise key is folded
from the step, so k steps + resume to 2k equals 2k steps straight.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from etils import epath
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mscm_jax.model.compression_model import (
    CompressionModel,
    Mode,
    ModelConfig,
    init_params,
    model_fingerprint,
)
from mscm_jax.training.configs import ConfigError, model_config, param_groups, to_json, validate
from mscm_jax.training.data import BatchLoader, centre_crop, open_sources, to_float

T = TypeVar("T")


class TrainingError(RuntimeError):
    """Training cannot go on (e.g. too many non-finite steps in a row)."""


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any
    ema_params: Any  # {} when the EMA is disabled.


@dataclasses.dataclass(frozen=True)
class TrainSummary:
    """What `train` returns: the final state and the figures of the run."""

    state: TrainState
    steps_run: int
    seconds: float
    steps_per_second: float
    last_train: dict
    last_eval: dict
    input_images_per_second: float
    skipped_steps: int
    params_sha256: str  # `model_fingerprint` of the trained (not the EMA) parameters
    process_index: int
    process_count: int


def make_optimizer(train_cfg: ml_collections.ConfigDict, params: Any) -> optax.GradientTransformation:
    """Adam with piecewise-constant decay and global-norm clipping; frozen groups get no update."""
    total = int(train_cfg.total_steps)
    boundaries = {int(f * total): float(train_cfg.lr_decay) for f in train_cfg.lr_decay_at}
    schedule = optax.piecewise_constant_schedule(float(train_cfg.learning_rate), boundaries)
    tx = optax.chain(optax.clip_by_global_norm(float(train_cfg.grad_clip)), optax.adam(schedule))
    frozen = param_groups(train_cfg.freeze)
    if not frozen:
        return tx
    labels = {"params": {k: ("frozen" if k in frozen else "train") for k in params["params"]}}
    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def rate_distortion_loss(result, x: jax.Array, lmbda: float) -> tuple[jax.Array, dict]:
    mse = jnp.mean((result.x_hat - x) ** 2)
    bpp = jnp.mean(result.bpp)
    loss = lmbda * 255.0**2 * mse + bpp
    return loss, {"loss": loss, "bpp": bpp, "mse": mse, "psnr": -10.0 * jnp.log10(mse)}


@jax.jit
def _all_finite(tree: Any) -> jax.Array:
    """Whether every value in `tree` is finite (the train step's gradients, a checkpoint's state).

    One compiled call: checked leaf by leaf, op by op, before a checkpoint it compiled two
    operations per parameter shape, 2.1 s of a tiny model's first checkpoint."""
    return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)] or [True]))


def make_train_step(model: CompressionModel, tx: optax.GradientTransformation, train_cfg):
    """The jitted-to-be step: accumulate over micro-batches, skip non-finite updates."""
    lmbda = float(train_cfg.lmbda)
    accum = int(train_cfg.grad_accum_steps)
    ema_decay = float(train_cfg.ema_decay)

    def micro_loss(params, x, key):
        result = model.apply(params, x, Mode.TRAIN, rngs={"noise": key})
        return rate_distortion_loss(result, x, lmbda)

    def step(state: TrainState, batch: jax.Array, base_key: jax.Array):
        key = jax.random.fold_in(base_key, state.step)
        # Micro-batch i takes every accum-th example, so each is spread over all
        # devices. An unrolled loop, not lax.scan: accum is small, and XLA:CPU
        # runs convolutions inside a while loop far slower than unrolled.
        grads, metrics = None, None
        for i, micro_key in enumerate(jax.random.split(key, accum)):
            (_, m), g = jax.value_and_grad(micro_loss, has_aux=True)(state.params, batch[i::accum], micro_key)
            grads = g if grads is None else jax.tree.map(jnp.add, grads, g)
            metrics = m if metrics is None else jax.tree.map(jnp.add, metrics, m)
        grads = jax.tree.map(lambda g: g / accum, grads)
        metrics = {k: v / accum for k, v in metrics.items()}

        finite = jnp.isfinite(metrics["loss"]) & _all_finite(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = state.ema_params
        if ema_decay > 0:
            ema = jax.tree.map(lambda e, p: ema_decay * e + (1 - ema_decay) * p, ema, params)
        candidate = TrainState(state.step + 1, params, opt_state, ema)
        # A non-finite step is not applied; the step counter (and so the data
        # order) still advances.
        kept = TrainState(state.step + 1, state.params, state.opt_state, state.ema_params)
        new_state = jax.tree.map(lambda n, o: jnp.where(finite, n, o), candidate, kept)
        metrics["finite"] = finite
        metrics["grad_norm"] = jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree.leaves(grads)))
        return new_state, metrics

    return step


def make_eval_step(model: CompressionModel, lmbda: float):
    def evaluate(params, batch):
        result = model.apply(params, batch, Mode.EVAL)
        _, metrics = rate_distortion_loss(result, batch, lmbda)
        per_image_mse = jnp.mean((jnp.clip(result.x_hat, 0, 1) - batch) ** 2, axis=(1, 2, 3))
        metrics["psnr"] = jnp.mean(-10.0 * jnp.log10(per_image_mse))
        return metrics

    return evaluate


def init_state(
    model: CompressionModel, train_cfg, key: jax.Array, crop: int
) -> tuple[TrainState, optax.GradientTransformation]:
    params = init_params(model, key, crop)
    tx = make_optimizer(train_cfg, params)
    return TrainState(jnp.zeros((), jnp.int32), params, *optimizer_and_ema(tx, params, train_cfg)), tx


def optimizer_and_ema(tx: optax.GradientTransformation, params: Any, train_cfg) -> tuple[Any, Any]:
    """The optimizer's initial state and the EMA's start (a copy, which must not share donated
    buffers with the params; {} if off), in one compiled call: run op by op they compiled each
    operation per parameter shape apart, 1.0 s of a tiny model's start on a 2-core CPU."""

    def start(params):
        return tx.init(params), jax.tree.map(jnp.copy, params) if train_cfg.ema_decay > 0 else {}

    return jax.jit(start)(params)


# --------------------------------------------------------------------------
# Checkpoints and workdirs.
# --------------------------------------------------------------------------


def absolute_workdir(workdir: str | epath.Path) -> epath.Path:
    """Local paths made absolute (Orbax needs them so); gs:// and other URLs kept."""
    path = epath.Path(workdir)
    return path if "://" in str(workdir) else path.resolve()


def checkpoint_manager(workdir: epath.Path, keep: int) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, cleanup_tmp_directories=True, enable_async_checkpointing=True
    )
    return ocp.CheckpointManager(workdir / "checkpoints", options=options)


def save_checkpoint(manager: ocp.CheckpointManager, state: TrainState, loader_state: dict) -> None:
    if not bool(_all_finite((state.params, state.ema_params))):
        raise TrainingError(f"refusing to checkpoint non-finite parameters at step {int(state.step)}")
    manager.save(
        int(state.step),
        args=ocp.args.Composite(state=ocp.args.StandardSave(state), loader=ocp.args.JsonSave(loader_state)),
    )


def restore_checkpoint(
    manager: ocp.CheckpointManager, target: TrainState, sharding: jax.sharding.Sharding
) -> tuple[TrainState, dict] | None:
    """The latest checkpoint's state, its arrays placed by `sharding` (the run's replicated one:
    arrays restored onto each process's own device cannot be placed across processes), and the
    loader's state; None without a checkpoint."""
    step = manager.latest_step()
    if step is None:
        return None
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), target)
    restored = manager.restore(
        step,
        args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract), loader=ocp.args.JsonRestore()),
    )
    return restored["state"], restored["loader"]


def load_workdir_params(workdir: str | epath.Path, prefer_ema: bool = True) -> tuple[ModelConfig, Any, int]:
    """(model config, parameters, step) of a workdir's latest checkpoint."""
    workdir = absolute_workdir(workdir)
    config_file = workdir / "config.json"
    if not config_file.exists():
        raise FileNotFoundError(f"{workdir} is not a training workdir (no config.json)")
    config = ml_collections.ConfigDict(json.loads(config_file.read_text()))
    handlers = {"state": ocp.StandardCheckpointHandler(), "loader": ocp.JsonCheckpointHandler()}
    absl_logger = logging.getLogger("absl")
    level = absl_logger.level
    absl_logger.setLevel(logging.ERROR)  # Orbax warns that a read-only manager will not write
    try:
        options = ocp.CheckpointManagerOptions(read_only=True)
        manager = ocp.CheckpointManager(workdir / "checkpoints", options=options, item_handlers=handlers)
    finally:
        absl_logger.setLevel(level)
    step = manager.latest_step()
    if step is None:
        raise FileNotFoundError(f"{workdir} has no finished checkpoint")
    # Restore onto one local device, whatever device layout wrote the checkpoint.
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    is_array = lambda x: hasattr(x, "shape")  # noqa: E731
    target = jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
        manager.item_metadata(step)["state"],
        is_leaf=is_array,
    )
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target)))["state"]
    manager.close()
    params = restored["ema_params"] if prefer_ema and restored.get("ema_params") else restored["params"]
    return model_config(config), jax.device_put(params), step


def _take_groups(params: Any, source: Any, groups: set[str], origin: str) -> Any:
    """`params` with the top-level groups `groups` copied from `source`; shapes must match."""
    out = dict(params["params"])
    mismatches = []
    for key in sorted(groups):
        if key not in source["params"]:
            mismatches.append(f"{key}: missing in {origin}")
            continue
        want = jax.tree.map(jnp.shape, params["params"][key])
        have = jax.tree.map(jnp.shape, source["params"][key])
        if want != have:
            mismatches.append(f"{key}: shapes differ")
            continue
        out[key] = source["params"][key]
    if mismatches:
        raise ConfigError(f"init_from {origin}: cannot take {'; '.join(mismatches[:5])}")
    return {"params": out}


def prepare_workdir(workdir: epath.Path, config: ml_collections.ConfigDict) -> None:
    """Writes config.json; refuses to resume a workdir that trains another model."""
    workdir.mkdir(parents=True, exist_ok=True)
    if jax.process_index() != 0:
        return
    config_file = workdir / "config.json"
    if config_file.exists():
        saved = json.loads(config_file.read_text())
        if saved.get("model") != json.loads(to_json(config))["model"]:
            raise ConfigError(
                f"{workdir} holds a run of another model ({saved.get('model')}); use a new workdir"
            )
    config_file.write_text(to_json(config))


class MetricsWriter:
    """Appends to metrics.jsonl and writes TensorBoard events (no TensorFlow needed)."""

    def __init__(self, workdir: epath.Path):
        self.enabled = jax.process_index() == 0
        self.path = workdir / "metrics.jsonl"
        self._tb = None
        if self.enabled:
            try:
                from tensorboardX import SummaryWriter

                self._tb = SummaryWriter(str(workdir / "tb"))
            except ImportError:
                self._tb = None

    def write(self, step: int, split: str, metrics: dict) -> None:
        if not self.enabled:
            return
        row = {"step": step, "split": split, **{k: float(v) for k, v in metrics.items()}}
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(f"{split}/{k}", float(v), step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


# --------------------------------------------------------------------------
# The pieces of a run: devices, starting state, data, signals, reporting.
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Shardings:
    """Data parallelism over all devices: state replicated, batches split along "data"."""

    replicated: NamedSharding
    data: NamedSharding


def data_parallel_shardings(batch_size: int) -> Shardings:
    devices = np.asarray(jax.devices())
    if batch_size % len(devices):
        raise ConfigError(f"batch size {batch_size} is not divisible by {len(devices)} devices")
    mesh = Mesh(devices, ("data",))
    return Shardings(NamedSharding(mesh, P()), NamedSharding(mesh, P("data")))


def start_state(
    model: CompressionModel,
    config: ml_collections.ConfigDict,
    workdir: epath.Path,
    manager: ocp.CheckpointManager,
    key: jax.Array,
    replicated: jax.sharding.Sharding,
) -> tuple[TrainState, optax.GradientTransformation]:
    """The state a run starts from: its latest checkpoint, else a fresh init (with `init_from`'s groups)."""
    t_cfg = config.train
    state, tx = init_state(model, t_cfg, key, config.data.crop)
    restored = restore_checkpoint(manager, state, replicated)
    if restored is not None:
        state, loader_state = restored
        if loader_state.get("seed") != t_cfg.seed:
            raise ConfigError(f"{workdir} was trained with seed {loader_state.get('seed')}, not {t_cfg.seed}")
        print(f"resuming from step {int(state.step)} in {workdir}", file=sys.stderr)
    elif t_cfg.init_from:
        _, source_params, source_step = load_workdir_params(t_cfg.init_from)
        # On the host: arrays on this process's device could not be placed across processes.
        source_params = jax.device_get(source_params)
        groups = param_groups(t_cfg.init_from_groups) or set(state.params["params"])
        params = _take_groups(state.params, source_params, groups, f"{t_cfg.init_from} (step {source_step})")
        state = TrainState(state.step, params, *optimizer_and_ema(tx, params, t_cfg))
        print(f"initialized {sorted(groups)} from {t_cfg.init_from} step {source_step}", file=sys.stderr)
    return state, tx


# A failure message as every process sees it: fixed length, so that all processes gather alike.
_MESSAGE_BYTES = 1024


def _gather_failures(error: BaseException | None) -> list[str]:
    """Every process's failure message ('' where it succeeded), in process order."""
    from jax.experimental import multihost_utils

    message = "" if error is None else (str(error) or type(error).__name__)
    local = np.frombuffer(message.encode()[:_MESSAGE_BYTES].ljust(_MESSAGE_BYTES, b"\0"), np.uint8)
    rows = np.asarray(multihost_utils.process_allgather(local)).reshape(-1, _MESSAGE_BYTES)
    return [row.tobytes().rstrip(b"\0").decode(errors="replace") for row in rows]


def on_every_process(action: Callable[[], T], what: str, process_zero_first: bool = False) -> T:
    """`action()` on every process, which all fail together if it failed on any.

    Multi-host, a step that fails on one host alone (its data, or process 0's
    workdir check) would leave the others waiting at the next collective until
    the distributed runtime gives up; here every process raises at once, the
    others naming the process that failed and its message. `process_zero_first`:
    process 0 runs `action` before the others start, so that it downloads and
    prepares a tfds dataset once (into a shared `$TFDS_DATA_DIR`) while they wait.
    """
    if jax.process_count() == 1:
        return action()
    me, result, error = jax.process_index(), None, None
    # Whether this process runs `action` in each turn; every process gathers after every turn.
    turns = [me == 0, me != 0] if process_zero_first else [True]
    for my_turn in turns:
        if my_turn:
            try:
                result = action()
            except Exception as e:  # re-raised below, after the others have heard of it
                error = e
        failed = [(i, message) for i, message in enumerate(_gather_failures(error)) if message]
        if error is not None:
            raise error
        if failed:
            i, message = failed[0]
            raise TrainingError(f"{what} failed on process {i} of {jax.process_count()}: {message}")
    return result


def _eval_batch(source, crop: int, limit: int) -> np.ndarray:
    count = min(len(source), limit)
    images = [to_float(centre_crop(source.load(i), crop)) for i in range(count)]
    if crop <= 0 and len({im.shape for im in images}) > 1:
        raise ConfigError("config.data.eval_crop = 0 needs eval images of one size")
    return np.stack(images)


def open_data(config: ml_collections.ConfigDict) -> tuple[BatchLoader, np.ndarray]:
    """This process's training batches (a pure function of seed and step) and the eval images."""
    d_cfg, t_cfg = config.data, config.train
    train_source, eval_source = open_sources(
        d_cfg.source, d_cfg.eval_source, tuple(d_cfg.eval_scenes), d_cfg.include_textures,
        d_cfg.tfds_split, d_cfg.tfds_eval_split,
    )  # fmt: skip
    loader = BatchLoader(
        train_source, t_cfg.batch_size, d_cfg.crop, t_cfg.seed,
        jax.process_index(), jax.process_count(), d_cfg.workers, d_cfg.prefetch,
    )  # fmt: skip
    return loader, _eval_batch(eval_source, d_cfg.eval_crop, d_cfg.max_eval_images)


def compile_steps(model: CompressionModel, tx: optax.GradientTransformation, train_cfg, shardings: Shardings):
    """The jitted train step (state donated and replicated, batch split over devices) and eval step."""
    step_fn = jax.jit(
        make_train_step(model, tx, train_cfg),
        in_shardings=(shardings.replicated, shardings.data, shardings.replicated),
        out_shardings=(shardings.replicated, shardings.replicated),
        donate_argnums=0,
    )
    return step_fn, jax.jit(make_eval_step(model, train_cfg.lmbda))


class StopSignal:
    """Whether to checkpoint and stop after a step: a pre-emption notice (SIGTERM).

    One process: within `with`, SIGTERM is recorded instead of ending the
    process. Several: the processes may hear it at different steps, or only one
    may, and checkpoints saved at different steps wait on each other forever
    (Orbax's save is collective); JAX's pre-emption service, which catches SIGTERM
    itself once `jax.distributed` is up, names one step for all of them, so no
    Python handler replaces its own.
    """

    def __enter__(self) -> StopSignal:
        self.signum = None
        self._distributed = jax.process_count() > 1
        if not self._distributed:
            self._previous = signal.signal(signal.SIGTERM, self._record)
        return self

    def _record(self, signum, _frame) -> None:
        self.signum = signum

    def after(self, step: int) -> int | None:
        """The signal to stop for after step `step` (every process calls this at every step), or None."""
        if self._distributed and _reached_preemption_sync_point(step):
            self.signum = signal.SIGTERM
        return self.signum

    def __exit__(self, *exc) -> None:
        if not self._distributed:
            signal.signal(signal.SIGTERM, self._previous)


def _reached_preemption_sync_point(step: int) -> bool:
    from jax.experimental import multihost_utils

    try:
        return multihost_utils.reached_preemption_sync_point(step)
    except RuntimeError:  # the service is off (`jax_enable_preemption_service`): SIGTERM ends the process
        return False


class RunLog:
    """What a run reports as it goes: metrics.jsonl and TensorBoard (`MetricsWriter`), and a
    progress bar on process 0."""

    def __init__(self, workdir: epath.Path, total_steps: int, start_step: int, progress: bool):
        from tqdm import tqdm

        self.writer = MetricsWriter(workdir)
        self.start_step, self.started = start_step, time.perf_counter()
        show = progress and jax.process_index() == 0
        self.bar = tqdm(
            total=total_steps, initial=start_step, disable=not show, unit="step", dynamic_ncols=True
        )

    def train(self, step: int, metrics: dict) -> dict:
        row = {k: float(v) for k, v in metrics.items() if k != "finite"}
        row["steps_per_second"] = (step - self.start_step) / (time.perf_counter() - self.started)
        self.writer.write(step, "train", row)
        self.bar.set_postfix(loss=f"{row['loss']:.3f}", bpp=f"{row['bpp']:.3f}", psnr=f"{row['psnr']:.2f}",
                             refresh=False)  # fmt: skip
        return row

    def eval(self, step: int, metrics: dict) -> dict:
        self.writer.write(step, "eval", metrics)
        return metrics

    def close(self) -> None:
        self.bar.close()
        self.writer.close()


class NonfiniteSteps:
    """Counts the steps skipped for a non-finite loss or gradient; too many in a row end the run."""

    def __init__(self, limit: int, log: RunLog):
        self.limit, self.log = limit, log
        self.in_row = self.skipped = 0

    def record(self, finite: bool, step: int) -> None:
        if finite:
            self.in_row = 0
            return
        self.in_row += 1
        self.skipped += 1
        self.log.writer.write(step, "train", {"nonfinite_skipped": self.skipped})
        if self.in_row >= self.limit:
            raise TrainingError(
                f"{self.in_row} non-finite steps in a row (last at step {step}); stopping without "
                f"applying them. The latest checkpoint holds the last finite state; try a lower "
                f"learning rate or more gradient clipping"
            )


def evaluate(eval_fn, state: TrainState, images: jax.Array, use_ema: bool) -> dict:
    metrics = eval_fn(state.ema_params if use_ema else state.params, images)
    return {k: float(v) for k, v in metrics.items()}


def _exit_for_signal(manager: ocp.CheckpointManager, signum: int, step: int) -> None:
    manager.wait_until_finished()
    where = " on one of the processes" if jax.process_count() > 1 else ""
    print(f"\nstopped by signal {signum}{where} at step {step}; checkpoint saved, "
          f"re-run the same command to resume", file=sys.stderr)  # fmt: skip
    raise SystemExit(128 + signum)


# --------------------------------------------------------------------------
# The loop.
# --------------------------------------------------------------------------


def train(
    config: ml_collections.ConfigDict,
    workdir: str | epath.Path,
    batches: Iterator[tuple[int, np.ndarray]] | None = None,
    progress: bool = True,
) -> TrainSummary:
    """Trains (or resumes) the run of `config` in `workdir`.

    `batches`, if given, replaces the data loader's (step, batch) pairs (tests feed crafted batches).
    """
    validate(config)
    workdir = absolute_workdir(workdir)
    t_cfg = config.train
    # Data first: a source that cannot be opened leaves no workdir behind to block a corrected retry.
    loader, eval_images = on_every_process(
        lambda: open_data(config), "opening the data", process_zero_first=True
    )
    on_every_process(lambda: prepare_workdir(workdir, config), "preparing the workdir")
    model = CompressionModel(model_config(config))
    shardings = data_parallel_shardings(t_cfg.batch_size)
    init_key, noise_key = jax.random.split(jax.random.PRNGKey(t_cfg.seed))
    manager = checkpoint_manager(workdir, t_cfg.keep_checkpoints)
    state, tx = start_state(model, config, workdir, manager, init_key, shardings.replicated)
    state = jax.device_put(state, shardings.replicated)
    start_step = int(state.step)
    step_fn, eval_fn = compile_steps(model, tx, t_cfg, shardings)
    eval_images = jax.device_put(eval_images, shardings.replicated)
    if batches is None:
        batches = loader.iterate(start_step, t_cfg.total_steps)

    def due(step: int, every: int) -> bool:
        return step % every == 0 or step == t_cfg.total_steps

    log = RunLog(workdir, t_cfg.total_steps, start_step, progress)
    nonfinite = NonfiniteSteps(t_cfg.max_nonfinite_in_row, log)
    last_train, last_eval, steps_run = {}, {}, 0
    try:
        with StopSignal() as stop:
            for step, batch in batches:
                global_batch = jax.make_array_from_process_local_data(shardings.data, batch)
                state, metrics = step_fn(state, global_batch, noise_key)
                done = step + 1
                nonfinite.record(bool(metrics["finite"]), done)
                log.bar.update(1)
                if due(done, t_cfg.log_every):
                    last_train = log.train(done, metrics)
                if due(done, t_cfg.eval_every):
                    last_eval = log.eval(done, evaluate(eval_fn, state, eval_images, t_cfg.ema_decay > 0))
                signum = stop.after(done)
                if due(done, t_cfg.checkpoint_every) or signum:
                    save_checkpoint(manager, state, {"seed": t_cfg.seed, "next_step": int(state.step)})
                steps_run += 1
                if signum:
                    _exit_for_signal(manager, signum, done)
    finally:
        log.close()
        manager.wait_until_finished()
        manager.close()
    seconds = time.perf_counter() - log.started
    return TrainSummary(
        state=state,
        steps_run=steps_run,
        seconds=seconds,
        steps_per_second=steps_run / seconds if seconds > 0 else float("nan"),
        last_train=last_train,
        last_eval=last_eval,
        input_images_per_second=loader.images_per_second,
        skipped_steps=nonfinite.skipped,
        params_sha256=model_fingerprint(model.config, state.params),
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
