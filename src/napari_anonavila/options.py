"""The options a user sets, in a module that imports nothing heavy: the CLI's --help, napari's widgets and menus
read them without loading torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from enum import Enum

__all__ = ["PRECISIONS", "Z_RANGE", "ScoreMode", "TrainConfig"]

PRECISIONS = ("float32", "tf32", "bfloat16", "float16", "int8")  # int8: a CPU's image tower only
Z_RANGE = (0.0, 8.0)  # calibrated z's fixed colour range: the same colour means the same z on every slide


class ScoreMode(str, Enum):
    """How D^N and D^A combine into the anomaly score (the paper's Table 3), or the zero-shot baseline."""

    SUM = "sum"
    MAX = "max"
    L2 = "l2"
    ZERO_SHOT = "zero_shot"

    def __str__(self) -> str:  # argparse and widgets show the value
        return self.value


@dataclass(frozen=True)
class TrainConfig:
    """Training settings. The authors' values: lr 1e-3, batch 100, 100 accumulated batches, 1 epoch, seed 42."""

    epochs: int = 1
    batch_size: int = 100
    lr: float = 1e-3
    accumulate: int = 100
    seed: int = 42

    def __post_init__(self) -> None:
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be at least 2 (the loss compares pairs), got {self.batch_size}")
        if self.epochs < 1 or self.accumulate < 1:
            raise ValueError("epochs and accumulate must be at least 1")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")

    def to_dict(self) -> dict:
        return asdict(self)
