"""Decoding schedules: which latent element is decoded at which stage.

Lin, Sun, Liu, Katto, "Multistage Spatial Context Models for Learned Image
Compression", ICASSP 2023, arXiv:2302.09263, Sec. 2.

A schedule is an n x n integer *stage pattern* tiled over the latent. Stage s
decodes, in one parallel step, every element whose in-patch position holds s.
The element's spatial context is every position of its 5x5 window (in its own
patch and in the neighbouring ones) whose stage is smaller. For `mscm2x2`
(`Schedule.context_kernel_mask()[1, 1]`)::

    latent: the pattern tiled      window of a stage-3 element X    its context taps
    0 1 0 1 0 1                    3 2 3 2 3                        . # . # .
    2 3 2 3 2 3                    1 0 1 0 1                        # # # # #
    0 1 0 1 0 1                    3 2 X 2 3                        . # X # .
    2 3 2 3 2 3                    1 0 1 0 1                        # # # # #
    0 1 0 1 0 1                    3 2 3 2 3                        . # . # .

    # = stage < 3, decoded before X: context (16 taps)
    . = stage 3, decoded together with X: not context

The `serial` schedule is the raster-scan autoregressive model (Minnen 2018):
one stage per latent position, the causal 5x5 mask everywhere.

Everything downstream (training, encoder, decoder, experiments) reads the
`StagePlan` derived here, so a new schedule is a new pattern, not new code.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import numpy as np

KERNEL_SIZE = 5

PAPER_4X4_ORDER = (
    (0, 2, 5, 4),
    (1, 7, 11, 8),
    (6, 12, 13, 10),
    (3, 14, 15, 9),
)


def _raster(n: int) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(range(r * n, (r + 1) * n)) for r in range(n))


BUILTIN_PATTERNS: dict[str, tuple[tuple[int, ...], ...] | None] = {
    "hyperprior": ((0,),),
    "checkerboard": ((0, 1), (1, 0)),
    "mscm2x2": _raster(2),
    "mscm3x3": _raster(3),
    "mscm4x4": _raster(4),
    "mscm4x4-paper": PAPER_4X4_ORDER,
    "serial": None,
}


class ScheduleError(ValueError):
    """An invalid schedule name or stage pattern."""


def validate_pattern(pattern: Sequence[Sequence[int]] | np.ndarray) -> np.ndarray:
    """Returns `pattern` as an int array, or raises `ScheduleError` saying why not.

    A valid pattern is a non-empty n x n grid of integers whose values are
    exactly the stages 0, 1, ..., S-1 (each at least once).
    """
    try:
        rows = [list(r) for r in pattern]
    except TypeError as e:
        raise ScheduleError(f"stage pattern must be a square grid of integers, got {pattern!r}") from e
    if not rows or not rows[0]:
        raise ScheduleError("stage pattern is empty; expected an n x n grid of stages")
    n = len(rows)
    if any(len(r) != n for r in rows):
        shape = [len(r) for r in rows]
        raise ScheduleError(f"stage pattern must be square (n x n); got {n} rows of lengths {shape}")
    values = [v for r in rows for v in r]
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        raise ScheduleError(f"stage pattern entries must be integers, got {rows}")
    arr = np.asarray(rows, dtype=np.int32)
    stages = sorted(set(arr.ravel().tolist()))
    if stages != list(range(len(stages))):
        raise ScheduleError(f"stages in a pattern must be 0..S-1 with none missing; got {stages} in {rows}")
    return arr


@dataclasses.dataclass(frozen=True)
class StagePlan:
    """Static (numpy) tables of one schedule on one latent size.

    Element `(u, v)` of entry `(s, p)` is the latent element at row
    `positions[s, p, 0] + stride * u`, column `positions[s, p, 1] + stride * v`,
    for `u < grid[0]`, `v < grid[1]`. Entries with `valid[s, p] == False` pad
    stages holding fewer positions than the largest one and are never used.

    Attributes:
      stride: n for an n x n pattern; 1 for `serial` (grid (1, 1)).
      grid: number of patches (rows, columns) over the padded latent.
      latent_shape: the latent's (rows, columns); positions beyond it are
        padding, never coded and zero in every context.
      positions: (S, P, 2) in-patch (or, for `serial`, latent) row, column.
      valid: (S, P) whether an entry is a real position.
      tap_mask: (S, P, k*k) whether each 5x5 window tap is context.
      weight_index: (S,) which context-weight set stage s uses.
      num_weight_sets: number of context-weight sets (S - 1; 1 for serial).
      stage_map: latent_shape array of each element's stage.
    """

    stride: int
    grid: tuple[int, int]
    latent_shape: tuple[int, int]
    positions: np.ndarray
    valid: np.ndarray
    tap_mask: np.ndarray
    weight_index: np.ndarray
    num_weight_sets: int
    stage_map: np.ndarray

    @property
    def num_stages(self) -> int:
        return self.positions.shape[0]

    @property
    def max_positions(self) -> int:
        return self.positions.shape[1]

    @property
    def padded_shape(self) -> tuple[int, int]:
        return (self.stride * self.grid[0], self.stride * self.grid[1])

    def _element_grid(self, stage: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h, w = self.grid
        rows = self.positions[stage, :, 0, None] + self.stride * np.arange(h)
        cols = self.positions[stage, :, 1, None] + self.stride * np.arange(w)
        rows, cols = np.broadcast_arrays(rows[:, :, None], cols[:, None, :])  # (P, h, w)
        inside = (rows < self.latent_shape[0]) & (cols < self.latent_shape[1])
        return rows, cols, inside & self.valid[stage][:, None, None]

    def element_mask(self, stage: int) -> np.ndarray:
        """(P, h, w) which entries of stage `stage` are real latent elements.

        False for padding entries (`valid`) and for elements beyond the latent
        when the patch size does not divide it.
        """
        return self._element_grid(stage)[2]

    def element_coordinates(self, stage: int) -> tuple[np.ndarray, np.ndarray]:
        """Latent rows and columns (E,) of stage `stage`'s elements, in (P, h, w) order."""
        rows, cols, mask = self._element_grid(stage)
        return rows[mask], cols[mask]

    @property
    def elements_per_stage(self) -> np.ndarray:
        """(S,) number of real latent positions decoded at each stage."""
        return np.bincount(self.stage_map.ravel(), minlength=self.num_stages)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A decoding schedule: an n x n stage pattern, or the serial raster scan."""

    name: str
    pattern: np.ndarray | None  # None: serial raster scan.
    kernel_size: int = KERNEL_SIZE

    def __post_init__(self):
        if self.kernel_size % 2 != 1 or self.kernel_size < 1:
            raise ScheduleError(f"context kernel size must be odd, got {self.kernel_size}")

    def __eq__(self, other) -> bool:
        if not isinstance(other, Schedule):
            return NotImplemented
        return self.to_config() == other.to_config()

    def __hash__(self) -> int:
        return hash(json.dumps(self.to_config()))

    @property
    def is_serial(self) -> bool:
        return self.pattern is None

    @property
    def patch_size(self) -> int | None:
        return None if self.is_serial else int(self.pattern.shape[0])

    @property
    def num_stages(self) -> int | None:
        """Sequential steps to decode; None for serial (depends on latent size)."""
        return None if self.is_serial else int(self.pattern.max()) + 1

    @property
    def anchor_fraction(self) -> float | None:
        """Fraction of the latent coded at stage 0, without spatial context."""
        if self.is_serial:
            return None
        return float(np.mean(self.pattern == 0))

    @property
    def num_context_weight_sets(self) -> int:
        """One 5x5 context convolution per stage after stage 0 (serial: one)."""
        return 1 if self.is_serial else self.num_stages - 1

    def context_kernel_mask(self) -> np.ndarray:
        """(n, n, k, k) bool: window taps that are context, per in-patch position.

        `mask[i, j, a, b]` is True when the element at window offset
        `(a - k // 2, b - k // 2)` of an element at in-patch position (i, j)
        has a smaller stage, i.e. is already decoded. For `serial` the single
        (1, 1, k, k) mask is the causal raster mask.
        """
        k = self.kernel_size
        half = k // 2
        if self.is_serial:
            causal = (np.arange(k * k) < (k * k) // 2).reshape(k, k)
            return causal[None, None]
        p = self.pattern
        n = p.shape[0]
        offsets = np.arange(-half, half + 1)
        rows = (np.arange(n)[:, None] + offsets[None, :]) % n  # (i, a)
        neighbour = p[rows[:, None, :, None], rows[None, :, None, :]]  # (i, j, a, b)
        return neighbour < p[:, :, None, None]

    def stage_plan(self, latent_h: int, latent_w: int) -> StagePlan:
        """The static tables that drive training, encoding and decoding."""
        if latent_h < 1 or latent_w < 1:
            raise ScheduleError(f"latent must be at least 1x1, got {latent_h}x{latent_w}")
        masks = self.context_kernel_mask()
        if self.is_serial:
            rows, cols = np.divmod(np.arange(latent_h * latent_w), latent_w)
            positions = np.stack([rows, cols], -1)[:, None, :]
            num = latent_h * latent_w
            return StagePlan(
                stride=1,
                grid=(1, 1),
                latent_shape=(latent_h, latent_w),
                positions=positions.astype(np.int32),
                valid=np.ones((num, 1), bool),
                tap_mask=np.broadcast_to(masks.reshape(1, 1, -1), (num, 1, masks[0, 0].size)),
                weight_index=np.zeros(num, np.int32),
                num_weight_sets=1,
                stage_map=np.arange(num, dtype=np.int32).reshape(latent_h, latent_w),
            )
        p = self.pattern
        n = p.shape[0]
        s_count = self.num_stages
        per_stage = [np.argwhere(p == s) for s in range(s_count)]
        max_p = max(len(x) for x in per_stage)
        positions = np.zeros((s_count, max_p, 2), np.int32)
        valid = np.zeros((s_count, max_p), bool)
        tap_mask = np.zeros((s_count, max_p, masks.shape[2] * masks.shape[3]), bool)
        for s, pos in enumerate(per_stage):
            positions[s, : len(pos)] = pos
            valid[s, : len(pos)] = True
            for q, (i, j) in enumerate(pos):
                tap_mask[s, q] = masks[i, j].ravel()
        grid = (-(-latent_h // n), -(-latent_w // n))
        stage_map = np.tile(p, grid)[:latent_h, :latent_w]
        return StagePlan(
            stride=n,
            grid=grid,
            latent_shape=(latent_h, latent_w),
            positions=positions,
            valid=valid,
            tap_mask=tap_mask,
            weight_index=np.maximum(np.arange(s_count) - 1, 0).astype(np.int32),
            num_weight_sets=self.num_context_weight_sets,
            stage_map=stage_map.astype(np.int32),
        )

    def to_config(self) -> dict:
        """JSON-serializable description, stored with models and bitstreams."""
        return {
            "name": self.name,
            "pattern": None if self.is_serial else self.pattern.tolist(),
            "kernel_size": self.kernel_size,
        }

    @classmethod
    def from_config(cls, config: dict) -> Schedule:
        pattern = config.get("pattern")
        return cls(
            name=config["name"],
            pattern=None if pattern is None else validate_pattern(pattern),
            kernel_size=int(config.get("kernel_size", KERNEL_SIZE)),
        )

    def draw(self) -> str:
        """The pattern as a small text grid (stage numbers)."""
        if self.is_serial:
            return "raster scan over the whole latent (one position per stage)"
        width = len(str(self.num_stages - 1))
        border = "+" + "+".join("-" * (width + 2) for _ in range(self.patch_size)) + "+"
        lines = [border]
        for row in self.pattern:
            lines.append("|" + "|".join(f" {v:>{width}} " for v in row) + "|")
            lines.append(border)
        return "\n".join(lines)


def get_schedule(spec: str | Sequence[Sequence[int]] | Schedule) -> Schedule:
    """A schedule from a built-in name, a pattern, or a pattern written as JSON.

    Examples: `get_schedule("mscm4x4-paper")`, `get_schedule([[0, 2], [3, 1]])`,
    `get_schedule("[[0, 2], [3, 1]]")`.
    """
    if isinstance(spec, Schedule):
        return spec
    if isinstance(spec, str):
        text = spec.strip()
        if text.startswith("["):
            try:
                pattern = json.loads(text)
            except json.JSONDecodeError as e:
                raise ScheduleError(f"could not parse stage pattern {spec!r}: {e}") from e
            return get_schedule(pattern)
        if text not in BUILTIN_PATTERNS:
            raise ScheduleError(
                f"unknown schedule {spec!r}; built-in schedules are "
                f"{', '.join(BUILTIN_PATTERNS)}, or give a pattern such as [[0, 2], [3, 1]]"
            )
        pattern = BUILTIN_PATTERNS[text]
        return Schedule(text, None if pattern is None else np.asarray(pattern, np.int32))
    arr = validate_pattern(spec)
    return Schedule("custom" + json.dumps(arr.tolist()).replace(" ", ""), arr)


def builtin_schedules() -> list[Schedule]:
    return [get_schedule(name) for name in BUILTIN_PATTERNS]
