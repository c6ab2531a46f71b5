"""The VLM backend interface: preprocessing, L2-normalised image and text embeddings, and logit scale."""

from __future__ import annotations

import contextlib
import hashlib
import math
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..errors import BackendUnavailableError, NonFiniteError
from ..options import PRECISIONS
from ..userfiles import sha256_file

__all__ = ["PRECISIONS", "BackendSpec", "VLMBackend", "resolve_device", "sha256_file"]

_TEXT_BATCH = 256  # prompts encoded per call
_STREAMS = threading.Lock()  # torch's intra-op thread count is process-wide: one streamed encode at a time


@dataclass(frozen=True)
class BackendSpec:
    """A backend address (the one place that knows the grammar).

    ``demo``; ``conch`` (CONCH from the local Hugging Face cache) or ``conch:FILE`` (CONCH's
    ``pytorch_model.bin``, or an authors' Ano-NAViLa ``.pth`` that holds CONCH under ``VLM.*``);
    ``open_clip:MODEL@WEIGHTS`` or ``open_clip:hf-hub:ORG/NAME`` (from the local cache); ``hf_clip:FOLDER`` or
    ``hf_clip:ORG/NAME`` (a Hugging Face ``CLIPModel`` such as PLIP, from a folder or the local cache).
    """

    kind: str
    model: str = ""
    weights: str | None = None

    @classmethod
    def parse(cls, spec: str) -> BackendSpec:
        spec = spec.strip()
        kind, _, rest = spec.partition(":")
        if kind == "demo" and not rest:
            return cls("demo")
        if kind == "conch":
            return cls("conch", "conch_ViT-B-16", rest or None)
        if kind == "open_clip" and rest:
            if rest.startswith("hf-hub:") and len(rest) > len("hf-hub:"):
                return cls("open_clip", rest, None)
            model, _, weights = rest.partition("@")
            if model and weights:
                return cls("open_clip", model, weights)
        if kind == "hf_clip" and rest:
            return cls("hf_clip", rest, None)
        raise ValueError(
            f"unknown backend spec {spec!r}; use 'demo', 'conch' (local Hugging Face cache), 'conch:/path/to/file', "
            "'open_clip:MODEL@/path/weights', 'open_clip:hf-hub:ORG/NAME' or 'hf_clip:/folder' (or hf_clip:ORG/NAME)"
        )

    def __str__(self) -> str:
        if self.kind == "demo":
            return "demo"
        if self.kind == "conch":
            return f"conch:{self.weights}" if self.weights else "conch"
        if self.kind == "hf_clip":
            return f"hf_clip:{self.model}"
        return f"open_clip:{self.model}" + (f"@{self.weights}" if self.weights else "")




def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` picks CUDA, then Apple MPS, then the CPU; a named device must exist here."""
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        have = f"{torch.cuda.device_count()} CUDA device(s)" if torch.cuda.is_available() else "no CUDA GPU"
        raise BackendUnavailableError(f"device {device!r} is not available: this machine has {have} (torch "
                                      f"{torch.__version__}); use --device cpu or auto")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise BackendUnavailableError(f"device {device!r} is not available here; use --device cpu or auto")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {device!r} is not supported; use auto, cpu, cuda, cuda:N or mps")
    return dev


def require_file(path: str | None, what: str, hint: str) -> Path:
    """Check a weights file exists; raise a one-line BackendUnavailableError with the fix otherwise."""
    if not path:
        raise BackendUnavailableError(f"{what}: no weights file given; {hint}")
    p = Path(path).expanduser()
    if not p.is_file():
        raise BackendUnavailableError(f"{what}: weights file {p} not found; {hint}")
    return p


class VLMBackend:
    """A frozen vision-language model. Subclasses set the model, transform and tokenizer.

    Attributes
    ----------
    spec : BackendSpec
    embed_dim : int
        Size D of the normalised embeddings.
    image_size : int
        Side of the square model input in pixels.
    logit_scale_exp : float
        The model's learned ``logit_scale.exp()``.
    weights_sha256 : str or None
        Hash of the weights file, so checkpoints can refuse another model.
    """

    description = ""
    image_tower: tuple[str, ...] = ("visual",)  # the submodules that make image embeddings (int8 quantises these)

    def __init__(self, spec: BackendSpec, model: torch.nn.Module, transform, device: torch.device,
                 weights_sha256: str | None, *, precision: str = "float32") -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}")
        self.spec = spec
        self.precision = precision
        self.device = device
        self.model = model.to(device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.transform = transform
        self._geometric, self._mean, self._std = _split_transform(transform)
        self.weights_sha256 = weights_sha256
        self.logit_scale_exp = float(self.model.logit_scale.detach().float().exp().cpu().reshape(-1)[0])
        # bfloat16 on a CPU: the weights themselves in bfloat16 (oneDNN's bfloat16 kernels, AMX where the CPU has
        # it); CPU autocast instead recasts every weight on every call and is slower than float32 (bench/)
        self._weights_dtype = torch.bfloat16 if precision == "bfloat16" and device.type == "cpu" else None
        if self._weights_dtype is not None:
            self.model = self.model.to(self._weights_dtype)
        if precision == "int8":  # (refused off the CPU by hardware.choose_precision)
            from .quantise import int8_image_tower

            self.model = int8_image_tower(self.model, self.image_tower)
        self.micro_batch = _CPU_MICRO_BATCH if device.type == "cpu" else 0  # images per forward pass (0: all)
        self.cpu_streams = True  # on a CPU, passes side by side on one thread each (see _cpu_streams)
        self._text_cache: dict[str, tuple[str, torch.Tensor]] = {}  # token-id hash -> (prompt, embedding)
        self._disk_loaded = False
        with torch.no_grad():
            probe = self._encode_text_raw(["probe"])
        self.embed_dim = int(probe.shape[-1])
        self.image_size = int(self._input_size())

    # -- to implement -------------------------------------------------------------------------------
    def _encode_image_raw(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _encode_text_raw(self, prompts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def _input_size(self) -> int:
        """Side of the square model input in pixels."""
        size = getattr(self.model.visual, "image_size", 224)
        return size[0] if isinstance(size, (tuple, list)) else size

    # -- public -------------------------------------------------------------------------------------
    @property
    def numerics(self) -> str:
        """How the encoders compute: the precision, and for bfloat16 whether weights or autocast (the caches' key:
        the two give slightly different embeddings)."""
        if self.precision == "int8":
            return "int8-dynamic-image"
        return "bfloat16-weights" if self._weights_dtype is not None else self.precision

    @property
    def id(self) -> str:
        """Identity of the embedding space: the spec kind and model plus the weights hash."""
        return f"{self.spec.kind}:{self.spec.model}:{self.weights_sha256 or 'unhashed'}"

    def prepare(self, image: np.ndarray | Image.Image) -> np.ndarray:
        """The geometric part of the model's transform (resize, crop; PIL, outside the GIL), as (S, S, 3) uint8.

        An image is resized in its own mode and converted to RGB after, as the CONCH and open_clip transforms do:
        Pillow resizes RGBA and LA with premultiplied alpha and palette images by nearest neighbour, so converting
        first would give other pixels. Reader threads run this per patch; :meth:`to_pixels` then converts and
        normalises whole batches.
        """
        pil = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, np.uint8))
        if self._geometric is None:  # a transform we cannot split: the whole of it, per image
            return self.transform(pil)
        return np.asarray(self._geometric(pil).convert("RGB"))

    def to_pixels(self, batch: np.ndarray | list) -> torch.Tensor:
        """Prepared uint8 images (N, S, S, 3) -> the model's input (N, 3, S, S) float32, on the model's device.

        The same arithmetic as torchvision's ToTensor and Normalize (so the same numbers), for a whole batch at
        once; on a GPU the uint8 batch travels (4x fewer bytes) and is converted there.
        """
        if self._geometric is None:
            return torch.stack(list(batch)).to(self.device)
        x = torch.from_numpy(np.ascontiguousarray(np.stack(batch) if isinstance(batch, list) else batch))
        if self.device.type == "cuda":
            x = x.pin_memory()
        x = x.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float().div(255)
        if self._mean is not None:
            x = x.sub(self._mean.to(x.device)).div(self._std.to(x.device))
        return x

    def preprocess(self, images: Sequence[np.ndarray | Image.Image]) -> torch.Tensor:
        """RGB images (H, W, 3 uint8 arrays or PIL) -> a (N, 3, S, S) float tensor, with the model's transform."""
        return self.to_pixels([self.prepare(im) for im in images])

    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Preprocessed pixels (N, 3, S, S) -> L2-normalised float32 embeddings (N, D) on the CPU."""
        if pixels.device != self.device:
            if self.device.type == "cuda" and not pixels.is_pinned():
                pixels = pixels.pin_memory()  # page-locked, so the copy below runs asynchronously
            pixels = pixels.to(self.device, non_blocking=True)
        if self._weights_dtype is not None:
            pixels = pixels.to(self._weights_dtype)
        streams = self._cpu_streams(len(pixels))
        if streams > 1:
            outs = _in_streams(self._encode_pass, _even_chunks(pixels, streams, self.micro_batch), streams)
        else:
            step = self.micro_batch or max(1, len(pixels))
            outs = [self._encode_pass(pixels[s : s + step]) for s in range(0, len(pixels), step)]
        out = outs[0] if len(outs) == 1 else torch.cat(outs)  # one pass (a GPU's whole batch): no copy
        return F.normalize(out.float(), dim=-1).cpu()

    def _encode_pass(self, pixels: torch.Tensor) -> torch.Tensor:
        """One forward pass (gradients off and the precision set here: both are per thread in torch)."""
        with torch.no_grad(), self._precision():
            return self._encode_image_raw(pixels)

    def _cpu_streams(self, n: int) -> int:
        """How many single-threaded forward passes run side by side (1: one pass at a time on all threads).

        On a CPU, forward passes of at most 8 images keep their activations in the caches (faster than one pass of
        32 for ViT-B/16), and several such passes at once, one thread each, take less CPU time than the same passes
        one after another with the threads sharing each (ViT-B/16 on 2 cores, end to end: 0.32 against 0.40 CPU s per
        patch; bench/bench_peers_e2e.py). Each image's embedding is its own either way.
        """
        if self.device.type != "cpu" or not self.cpu_streams or not self.micro_batch or n <= self.micro_batch:
            return 1
        return min(torch.get_num_threads(), math.ceil(n / self.micro_batch))

    def embed_images(self, images: Sequence[np.ndarray | Image.Image]) -> torch.Tensor:
        """Preprocess and encode in one call."""
        return self.encode_images(self.preprocess(images))

    @contextlib.contextmanager
    def _precision(self):
        """float32 (the authors' choice, the default), TF32 matrix products, or bfloat16/float16 autocast (on a CPU,
        bfloat16 is the weights' own type instead, and int8 the image tower's quantised layers: see __init__)."""
        if self._weights_dtype is not None:
            yield
        elif self.precision in ("bfloat16", "float16"):
            with torch.autocast(self.device.type, dtype=getattr(torch, self.precision)):
                yield
        elif self.precision == "tf32" and self.device.type == "cuda":
            before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
            try:
                yield
            finally:
                torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
        else:
            yield

    @torch.no_grad()
    def encode_texts(self, prompts: Sequence[str]) -> torch.Tensor:
        """Prompts -> L2-normalised float32 embeddings (K, D) on the CPU.

        Cached by the hash of each prompt's token ids (never the string: a tokenizer that changes with a library
        version gets new embeddings), in memory and, for hashed weights, on disk per (weights, precision).
        """
        from .text_cache import load_text_cache, save_text_cache, token_key

        prompts = list(prompts)
        keys = [token_key(ids) for ids in self.token_ids(prompts)] if prompts else []
        todo = {k: p for k, p in zip(keys, prompts, strict=True) if k not in self._text_cache}
        if todo and self.weights_sha256 and not self._disk_loaded:
            self._text_cache.update(load_text_cache(self._text_cache_path(), self.embed_dim))
            self._disk_loaded = True
            todo = {k: p for k, p in todo.items() if k not in self._text_cache}
        items = list(todo.items())
        for s in range(0, len(items), _TEXT_BATCH):  # bounded memory for any number of terms
            part = items[s : s + _TEXT_BATCH]
            with self._precision():
                raw = self._encode_text_raw([p for _, p in part])
            embs = F.normalize(raw.float(), dim=-1).cpu()
            if not torch.isfinite(embs).all():
                raise NonFiniteError(f"{self.spec}: the text encoder gave NaN or infinite embeddings (e.g. for "
                                     f"{part[0][1]!r}); its weights may be damaged")
            self._text_cache.update({k: (p, e) for (k, p), e in zip(part, embs, strict=True)})
        if todo and self.weights_sha256:
            save_text_cache(self._text_cache_path(), self._text_cache)
        return torch.stack([self._text_cache[k][1] for k in keys]) if keys else torch.zeros(0, self.embed_dim)

    def token_ids(self, prompts: list[str]) -> list[list[int]]:
        """The token ids the text encoder reads for each prompt (the text cache's key)."""
        raise NotImplementedError

    def _text_cache_path(self) -> Path:
        from ..userfiles import cache_dir

        key = hashlib.sha256(f"{self.id}|{self.numerics}".encode()).hexdigest()[:24]
        return cache_dir() / "text-embeddings" / f"{key}.v2.safetensors"


_CPU_MICRO_BATCH = 8


def _split_transform(transform):
    """(PIL steps before ToTensor, Normalize mean (3, 1, 1), std) of a torchvision Compose; (None, None, None)
    when the transform is not of that form (then it runs whole, per image)."""
    from torchvision import transforms as T

    steps = list(getattr(transform, "transforms", []))
    i = next((k for k, t in enumerate(steps) if "ToTensor" in type(t).__name__), None)
    tail = steps[i + 1 :] if i is not None else []
    if i is None or len(tail) > 1 or (tail and not isinstance(tail[0], T.Normalize)):
        return None, None, None
    if not tail:
        return T.Compose(steps[:i]), None, None
    mean = torch.as_tensor(tail[0].mean, dtype=torch.float32).reshape(-1, 1, 1)
    std = torch.as_tensor(tail[0].std, dtype=torch.float32).reshape(-1, 1, 1)
    return T.Compose(steps[:i]), mean, std


def _even_chunks(pixels: torch.Tensor, streams: int, most: int) -> list[torch.Tensor]:
    """Split a batch into a multiple of ``streams`` chunks of at most ``most`` images, as even as possible (so the
    streams finish together)."""
    rounds = math.ceil(len(pixels) / (streams * most))
    return list(torch.tensor_split(pixels, min(len(pixels), streams * rounds)))


def _in_streams(fn, chunks: list[torch.Tensor], streams: int) -> list[torch.Tensor]:
    """``fn`` of each chunk, in order, on ``streams`` threads with one intra-op thread each (new threads take
    torch's thread count when they first compute, so it is set before they start and restored after)."""
    with _STREAMS:
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            with ThreadPoolExecutor(streams, thread_name_prefix="anonavila-encoder") as pool:
                return list(pool.map(fn, chunks))
        finally:
            torch.set_num_threads(before)
