"""Shared CLI pieces: argument types, progress bars, detector and term-pool options."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ..progress import Progress, ProgressCallback

__all__ = ["add_backend_args", "add_terms_args", "positive_int", "progress_bar", "terms_from_args"]


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def fraction(text: str) -> float:
    """A part of a patch's area: a number in (0, 1]."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"a part of a patch's area lies in (0, 1], got {text}")
    return v


def existing_path(text: str) -> Path:
    p = Path(text)
    if not p.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file or folder")
    return p


def model_path(text: str) -> Path:
    """A checkpoint file; 'demo' gets a pointer to where a demo checkpoint comes from."""
    if text.strip().lower() == "demo" and not Path(text).exists():
        raise argparse.ArgumentTypeError(
            "'demo' is a backend, not a checkpoint: the demo model must first learn normal tissue. 'anonavila demo' "
            "trains one (demo-output/model.safetensors), or: anonavila train --backend demo --normal NORMAL --out "
            "model.safetensors")
    return existing_path(text)


def add_backend_args(p: argparse.ArgumentParser, default: str | None = "demo") -> None:
    """--backend (a spec; ``default=None``: override a checkpoint's), --device, --precision, --allow-download."""
    from ..options import PRECISIONS

    help_ = ("VLM: 'demo' (random, no pathology knowledge), 'conch' (CONCH from the local Hugging Face cache), "
             "'conch:/path/pytorch_model.bin', 'open_clip:MODEL@/path/weights', 'open_clip:hf-hub:ORG/NAME', "
             "'hf_clip:/folder'")
    p.add_argument("--backend", default=default, metavar="SPEC",
                   help=help_ + (" (default: %(default)s)" if default else " (default: the checkpoint's own)"))
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps or auto (default: auto)")
    p.add_argument("--precision", default="float32", choices=("auto", *PRECISIONS),
                   help="encoder precision (default: float32, as the authors; 'auto': bfloat16 on a CPU with "
                        "bfloat16 matrix hardware, else int8 on one with VNNI, else float32, and says why; 'int8': "
                        "the image tower's linear layers in int8, CPU only; lower ones can reorder close scores: "
                        "see docs/user-guide.md)")
    p.add_argument("--allow-download", action="store_true",
                   help="fetch a model missing from the local Hugging Face cache (otherwise nothing goes online)")


def add_terms_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--normal-terms", type=existing_path, help="normal pool: authors' CSV or plain text")
    p.add_argument("--abnormal-terms", type=existing_path, help="abnormal pool: authors' CSV or plain text")
    p.add_argument("--template", default="an image showing {}", help="prompt template for plain-text pools")


def terms_from_args(args: argparse.Namespace):
    from ..terms import TermPools

    if bool(args.normal_terms) != bool(args.abnormal_terms):
        raise ValueError("give both --normal-terms and --abnormal-terms, or neither (the shipped pools)")
    if args.normal_terms:
        return TermPools.from_files(args.normal_terms, args.abnormal_terms, template=args.template)
    return TermPools.default()


class _Bars:
    """One tqdm bar per stage on stderr; where stderr is not a terminal (a log, a batch job), a plain line per stage
    at least every ``every_s`` seconds and at the stage's end, so a long step is never silent."""

    def __init__(self, disable: bool, *, lines: bool = False, every_s: float = 5.0) -> None:
        self.disable, self.lines, self.every_s = disable, lines, every_s
        self.bar = None
        self.stage = None
        self._last = self._start = 0.0

    def __call__(self, event: Progress) -> None:
        if self.disable:
            return
        if self.lines:
            self._line(event)
            return
        from tqdm import tqdm

        if event.stage != self.stage:
            self.close()
            self.stage = event.stage
            self.bar = tqdm(total=event.total, desc=event.stage, file=sys.stderr, leave=False, dynamic_ncols=True)
        self.bar.total = event.total
        self.bar.n = event.done
        if "loss" in event.info:
            self.bar.set_postfix(loss=f"{event.info['loss']:.4f}", refresh=False)
        self.bar.refresh()

    def _line(self, event: Progress) -> None:
        import time

        now = time.monotonic()
        if event.stage != self.stage:
            self.close()
            self.stage, self._start, self._last = event.stage, now, now
        if now - self._last >= self.every_s or (event.total and event.done >= event.total):
            self._print(event, now)

    def _print(self, event: Progress, now: float) -> None:
        self._last = now
        part = f"{event.done}/{event.total} ({100 * event.done / event.total:.0f}%)" if event.total else f"{event.done}"
        loss = f", loss {event.info['loss']:.4f}" if "loss" in event.info else ""
        print(f"[{event.stage}] {part}{loss}, {now - self._start:.0f} s", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def progress_bar(args: argparse.Namespace) -> ProgressCallback:
    quiet = bool(getattr(args, "quiet", False))
    return _Bars(disable=quiet, lines=not sys.stderr.isatty())
