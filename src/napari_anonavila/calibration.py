"""Scores on a scale a reader can interpret: calibrated against normal tissue the detector has not seen.

The raw score (the authors' ``D^N + D^A``) is a tiny distance whose size depends on the model. The reference is a
set of normal patches the MLP was not trained on: the held-out centroid set (each scored against the centroids
without itself, so it is not in-sample) or normal tissue given to ``anonavila calibrate``. Against it:

- ``z`` = (score - median) / (1.4826 MAD): robust standard deviations above typical normal tissue. It is a
  strictly increasing function of the score, so it ranks patches exactly as the score does.
- ``p_normal`` = (1 + #{reference >= score}) / (n + 1): the conformal p-value, the chance that normal tissue
  scores at least this high. For normal tissue exchangeable with the reference it is uniform, so a threshold
  at 0.05 flags 5% of normal patches.
- per slide, patches significant at a false-discovery rate (Benjamini-Hochberg on ``p_normal``), and, when normal
  slides were given, a slide p-value of the slide's eroded maximum against theirs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where tensors are made: a saved result's z and p reopen without it
    import torch

__all__ = ["DOMAIN_Z", "FDR", "MIN_CALIBRATION", "MODES", "OUT_OF_DOMAIN", "Calibration", "benjamini_hochberg",
           "loo_distances", "mode_scores", "slide_calibration"]

FDR = 0.05  # default false-discovery rate for significant patches
MODES = ("sum", "max", "l2", "zero_shot")  # reference columns, one per score mode
_MAD_TO_SD = 1.482602218505602  # 1 / Phi^-1(3/4): the MAD of a normal distribution is 0.6745 sd
MIN_CALIBRATION = 20  # fewer normal reference patches than this give no calibration
DOMAIN_Z = 5.0  # a slide whose median patch lies more robust SDs above the reference than this is out of its domain
OUT_OF_DOMAIN = ("this tissue is unlike the model's normal reference (median z {median_z:.3g}, above {bound:g}): its z "
                 "values are beyond the scale, not findings; calibrate on normal tissue from this source")


@dataclass(frozen=True)
class Calibration:
    """The normal reference of a detector: per reference patch the score of every mode (columns ``MODES``), and
    optionally per normal slide its eroded maximum of every mode but zero-shot.

    ``source`` says where the reference came from, for people and provenance.
    """

    patch_scores: np.ndarray  # (n, 4) float64, columns MODES
    source: str
    slide_scores: np.ndarray | None = None  # (m, 3) float64: max_eroded per normal slide for sum, max, l2
    _sorted: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        ref = np.asarray(self.patch_scores, dtype=np.float64)
        if ref.ndim != 2 or ref.shape[1] != len(MODES):
            raise ValueError(f"calibration reference must be (n, {len(MODES)}), got {ref.shape}")
        if ref.shape[0] < MIN_CALIBRATION:
            raise ValueError(f"a calibration needs at least {MIN_CALIBRATION} normal reference patches, got "
                             f"{ref.shape[0]}; give more normal tissue")
        if not np.isfinite(ref).all():
            raise ValueError("the calibration reference holds NaN or infinite scores")
        object.__setattr__(self, "patch_scores", ref)
        for mode in MODES[:3]:  # the head's modes share the distances: a degenerate reference is refused here,
            self.centre_scale(mode)  # before anything is saved with it (zero-shot is checked where it is used)
        if self.slide_scores is not None:
            sl = np.asarray(self.slide_scores, dtype=np.float64).reshape(-1, 3)
            if not np.isfinite(sl).all():
                raise ValueError("the slide reference holds NaN or infinite scores")
            object.__setattr__(self, "slide_scores", sl if len(sl) else None)

    @property
    def n(self) -> int:
        return int(self.patch_scores.shape[0])

    def reference(self, mode: str) -> np.ndarray:
        """The reference scores of ``mode``, sorted."""
        if mode not in self._sorted:
            self._sorted[mode] = np.sort(self.patch_scores[:, MODES.index(str(mode))])
        return self._sorted[mode]

    def centre_scale(self, mode: str) -> tuple[float, float]:
        """(median, 1.4826 MAD) of the reference; a reference whose MAD is zero (more than half its scores tie) has
        no robust spread and is refused."""
        ref = self.reference(mode)
        med = float(np.median(ref))
        scale = _MAD_TO_SD * float(np.median(np.abs(ref - med)))
        if not scale > 0:
            ties = int(np.sum(ref == med))
            raise ValueError(f"the normal reference is degenerate: {ties} of its {ref.size} {mode} scores are equal "
                             "(more than half), so it has no robust spread for z; calibrate on more varied normal "
                             "tissue (more slides or regions)")
        return med, scale

    def z(self, scores: np.ndarray, mode: str) -> np.ndarray:
        med, scale = self.centre_scale(mode)
        return (np.asarray(scores, dtype=np.float64) - med) / scale

    def p(self, scores: np.ndarray, mode: str) -> np.ndarray:
        """Conformal p-values: (1 + #{reference >= s}) / (n + 1)."""
        ref = self.reference(mode)
        above = ref.size - np.searchsorted(ref, np.asarray(scores, dtype=np.float64), side="left")
        return (1.0 + above) / (ref.size + 1.0)

    def slide_p(self, max_eroded: float, mode: str) -> float | None:
        """The slide p-value of an eroded maximum against the normal slides' (None without a slide reference)."""
        if self.slide_scores is None or mode == "zero_shot" or not np.isfinite(max_eroded):
            return None
        ref = self.slide_scores[:, MODES.index(mode)]
        return float((1 + np.sum(ref >= max_eroded)) / (ref.size + 1))

    def describe(self) -> str:
        slides = f", {len(self.slide_scores)} normal slides" if self.slide_scores is not None else ""
        return f"calibrated on {self.n} normal patches{slides} ({self.source})"

    def to_dict(self) -> dict:
        """For provenance: the reference's size, source, and the centre and scale of each mode."""
        return {"n_patches": self.n, "n_slides": 0 if self.slide_scores is None else len(self.slide_scores),
                "source": self.source, "z": "(score - median) / (1.4826 MAD) of the reference",
                "p_normal": "(1 + #{reference >= score}) / (n + 1)",
                "centre_scale": {m: list(self.centre_scale(m)) for m in MODES}}

    def tensors(self) -> dict[str, torch.Tensor]:
        import torch

        out = {"calibration.patches": torch.from_numpy(self.patch_scores.copy())}
        if self.slide_scores is not None:
            out["calibration.slides"] = torch.from_numpy(self.slide_scores.copy())
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], source: str) -> Calibration | None:
        if "calibration.patches" not in tensors:
            return None
        slides = tensors.get("calibration.slides")
        return cls(tensors["calibration.patches"].double().numpy(), source,
                   None if slides is None else slides.double().numpy())


def loo_distances(h: torch.Tensor, centroid: torch.Tensor) -> np.ndarray:
    """1 - cos(h_i, c_-i) for every row, where c_-i is the mean of the other rows: each reference patch scored
    against the centroid it did not help to make (exactly ``(n c - h_i) / (n - 1)``, in float64)."""
    import torch

    h64 = h.double()
    n = h64.shape[0]
    loo = (centroid.double().reshape(1, -1) * n - h64) / (n - 1)
    return (1 - torch.nn.functional.cosine_similarity(h64, loo, dim=-1)).numpy()


def mode_scores(d_normal: np.ndarray, d_abnormal: np.ndarray, zero_shot: np.ndarray) -> np.ndarray:
    """The (n, 4) reference table: each patch's score in every mode (``MODES``), from its two distances."""
    d_n, d_a = np.asarray(d_normal, np.float64), np.asarray(d_abnormal, np.float64)
    return np.stack([d_n + d_a, np.maximum(d_n, d_a), np.sqrt(d_n**2 + d_a**2),
                     np.asarray(zero_shot, np.float64)], axis=1)


def benjamini_hochberg(p: np.ndarray, q: float = FDR) -> np.ndarray:
    """Which p-values are significant at false-discovery rate ``q`` (Benjamini-Hochberg step-up)."""
    p = np.asarray(p, dtype=np.float64)
    if p.size == 0:
        return np.zeros(0, bool)
    if not 0 < q < 1:
        raise ValueError(f"the false-discovery rate must lie in (0, 1), got {q}")
    order = np.argsort(p, kind="stable")
    passed = p[order] <= q * np.arange(1, p.size + 1) / p.size
    out = np.zeros(p.size, bool)
    if passed.any():
        out[order[: int(np.nonzero(passed)[0].max()) + 1]] = True
    return out


def slide_calibration(scores: np.ndarray, max_eroded: float, mode: str, calibration: Calibration | None, *,
                      patch_area_mm2: float | None, fdr: float = FDR) -> dict:
    """Per-slide calibrated numbers: significant patches at ``fdr``, their area, max z and the slide p-value."""
    if calibration is None:
        return {"calibrated": False, "note": "uncalibrated: scores are raw distances; see 'anonavila calibrate'"}
    s = np.asarray(scores, dtype=np.float64)
    sig = benjamini_hochberg(calibration.p(s, mode), fdr)
    n_sig = int(sig.sum())
    floor = 1.0 / (calibration.n + 1)
    z = calibration.z(s, mode)
    median_z = float(np.median(z)) if s.size else None
    out = median_z is not None and median_z > DOMAIN_Z
    return {"calibrated": True, "reference": calibration.describe(), "fdr": fdr, "n_significant": n_sig,
            "area_significant_mm2": None if patch_area_mm2 is None else n_sig * patch_area_mm2,
            "max_z": float(z.max()) if s.size else None, "median_z": median_z,
            "out_of_domain": out,
            "domain_note": OUT_OF_DOMAIN.format(median_z=median_z, bound=DOMAIN_Z) if out else "",
            "p_slide": calibration.slide_p(max_eroded, mode), "p_floor": floor,
            # BH flags k patches only if the floor is at most fdr * k / m: fewer extreme patches stay unflagged
            "min_detectable": int(np.ceil(floor * s.size / fdr)) if s.size else None}
