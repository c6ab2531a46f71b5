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

With ``normalise="slide"`` every slide is its own scale: a slide's scores (and each reference slide's) are first
standardised by that slide's median and 1.4826 MAD, and z and p are computed on the standardised scores against the
reference slides standardised the same way. A slide-wide shift of level or spread (stain, section thickness,
scanner) then no longer moves the false-alarm rate; what it cannot see is a change of the whole slide (docs/
calibration.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch is imported where tensors are made: a saved result's z and p reopen without it
    import torch

__all__ = ["DOMAIN_Z", "FDR", "MIN_CALIBRATION", "MIN_SLIDES_DECISION", "MIN_SLIDES_WARN", "MODES", "NORMALISE",
           "OUT_OF_DOMAIN", "Calibration", "benjamini_hochberg", "clopper_pearson", "loo_distances", "mode_scores",
           "slide_calibration"]

FDR = 0.05  # default false-discovery rate for significant patches
MODES = ("sum", "max", "l2", "zero_shot")  # reference columns, one per score mode
NORMALISE = ("reference", "slide")  # scores as they are against the pooled reference, or each slide on its own scale
_MAD_TO_SD = 1.482602218505602  # 1 / Phi^-1(3/4): the MAD of a normal distribution is 0.6745 sd
MIN_CALIBRATION = 20  # fewer normal reference patches than this give no calibration
MIN_SLIDES_WARN = 5  # fewer normal reference slides than this: a warning (slides differ more than patches)
MIN_SLIDES_DECISION = 19  # with K slides p_slide >= 1 / (K + 1): below 19 it can never reach 0.05
DOMAIN_Z = 5.0  # a slide whose median patch lies more robust SDs above the reference than this is out of its domain
OUT_OF_DOMAIN = ("this tissue is unlike the model's normal reference (median z {median_z:.3g}, above {bound:g}): its z "
                 "values are beyond the scale, not findings; calibrate on normal tissue from this source")


@dataclass(frozen=True)
class Calibration:
    """The normal reference of a detector: per reference patch the score of every mode (columns ``MODES``), and
    optionally per normal slide its slide statistic (``slide_statistic``: the top-1% mean, which does not grow with
    the slide's size; older references hold the eroded maximum) of every mode but zero-shot, and each patch's
    slide (``patch_slides``: its index into the slides, -1 for patches not from a slide).

    ``source`` says where the reference came from, for people and provenance. ``normalise`` is ``"reference"``
    (scores as they are) or ``"slide"`` (each slide, new or reference, standardised by its own median and robust
    SD first; needs every reference patch's slide, and at least ``MIN_CALIBRATION`` patches with spread per slide).
    """

    patch_scores: np.ndarray  # (n, 4) float64, columns MODES
    source: str
    slide_scores: np.ndarray | None = None  # (m, 3) float64: the statistic per normal slide for sum, max, l2
    patch_slides: np.ndarray | None = None  # (n,) int: each reference patch's slide (index into slide_scores), -1
    slide_statistic: str = "max_eroded"  # "top1" (the top-1% mean, from calibrate) or "max_eroded" (older)
    normalise: str = "reference"  # NORMALISE
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
        if self.patch_slides is not None:
            ps = np.asarray(self.patch_slides).astype(np.int64).ravel()
            k = 0 if self.slide_scores is None else len(self.slide_scores)
            if ps.shape != (ref.shape[0],) or ps.min() < -1 or ps.max() >= k:
                raise ValueError(f"patch_slides must give each of the {ref.shape[0]} reference patches a slide in "
                                 f"-1..{k - 1}")
            object.__setattr__(self, "patch_slides", ps)
        if self.slide_statistic not in ("top1", "max_eroded"):
            raise ValueError(f"unknown slide statistic {self.slide_statistic!r}")
        if self.normalise not in NORMALISE:
            raise ValueError(f"unknown normalisation {self.normalise!r}; choose from {', '.join(NORMALISE)}")
        if self.normalise == "slide":
            self._check_slides_normalise()

    def _check_slides_normalise(self) -> None:
        """Slide normalisation standardises each reference slide by itself: every patch needs its slide, and every
        slide enough patches with spread to have a median and a robust SD."""
        if self.patch_slides is None or self.k_slides < 2 or (self.patch_slides < 0).any():
            raise ValueError("slide normalisation needs a reference of normal slides (2 or more), every patch from "
                             "a slide: patch folders have no slide to normalise by")
        for j in range(self.k_slides):
            for mode in MODES[:3]:
                if (why := _unscalable(self.patch_scores[self.patch_slides == j, MODES.index(mode)])) is not None:
                    raise ValueError(f"slide normalisation: reference slide {j + 1} of {self.k_slides} {why}")

    @property
    def n(self) -> int:
        return int(self.patch_scores.shape[0])

    def _column(self, mode: str) -> np.ndarray:
        """The reference scores of ``mode`` in this calibration's normalisation (grid order)."""
        key = f"column:{mode}"
        if key not in self._sorted:
            col = self.patch_scores[:, MODES.index(str(mode))]
            if self.normalise == "slide":
                col = col.copy()
                for j in range(self.k_slides):
                    own = self.patch_slides == j
                    col[own] = _standardise(col[own])
            self._sorted[key] = col
        return self._sorted[key]

    def reference(self, mode: str) -> np.ndarray:
        """The reference scores of ``mode`` in this calibration's normalisation, sorted."""
        if mode not in self._sorted:
            self._sorted[mode] = np.sort(self._column(mode))
        return self._sorted[mode]

    def _raw(self, mode: str) -> np.ndarray:
        key = f"raw:{mode}"
        if key not in self._sorted:
            self._sorted[key] = np.sort(self.patch_scores[:, MODES.index(str(mode))])
        return self._sorted[key]

    def centre_scale(self, mode: str) -> tuple[float, float]:
        """(median, 1.4826 MAD) of the pooled reference as scored; a reference whose MAD is zero (more than half its
        scores tie) has no robust spread and is refused."""
        ref = self._raw(mode)
        med, scale = _median_scale(ref)
        if not scale > 0:
            ties = int(np.sum(ref == med))
            raise ValueError(f"the normal reference is degenerate: {ties} of its {ref.size} {mode} scores are equal "
                             "(more than half), so it has no robust spread for z; calibrate on more varied normal "
                             "tissue (more slides or regions)")
        return med, scale

    def unusable_for(self, scores: np.ndarray, what: str = "slide") -> str | None:
        """Why these scores (one slide's, or one patch ``what="folder"``'s) cannot be calibrated, or None. Only slide
        normalisation can refuse: it needs the slide's own median and robust SD."""
        if self.normalise != "slide":
            return None
        why = _unscalable(np.asarray(scores, np.float64))
        return None if why is None else f"slide normalisation: this {what} {why}; its scores stay uncalibrated"

    def normalised(self, scores: np.ndarray) -> np.ndarray:
        """Scores in this calibration's normalisation: as they are, or standardised by their own median and robust
        SD (``normalise="slide"``: ``scores`` are one slide's; NaN are left out of its median and SD)."""
        s = np.asarray(scores, dtype=np.float64)
        return _standardise(s) if self.normalise == "slide" else s

    def reference_z(self, scores: np.ndarray, mode: str) -> np.ndarray:
        """(score - median) / (1.4826 MAD) of the pooled reference as scored, whatever the normalisation: how far a
        slide lies from the normal tissue the model knows (the domain check)."""
        med, scale = self.centre_scale(mode)
        return (np.asarray(scores, dtype=np.float64) - med) / scale

    def z(self, scores: np.ndarray, mode: str) -> np.ndarray:
        """Robust z: against the pooled reference, or (``normalise="slide"``) against the slide itself."""
        return self.normalised(scores) if self.normalise == "slide" else self.reference_z(scores, mode)

    def p(self, scores: np.ndarray, mode: str) -> np.ndarray:
        """Conformal p-values of the (normalised) scores: (1 + #{reference >= s}) / (n + 1)."""
        ref = self.reference(mode)
        above = ref.size - np.searchsorted(ref, self.normalised(scores), side="left")
        return (1.0 + above) / (ref.size + 1.0)

    @property
    def k_slides(self) -> int:
        """How many normal slides the reference holds (0: patches only)."""
        return 0 if self.slide_scores is None else len(self.slide_scores)

    def slide_p(self, statistic: float, mode: str, patch_scores: np.ndarray | None = None) -> float | None:
        """The slide p-value of a slide against the normal slides (None without a slide reference); it cannot go
        below ``1 / (K + 1)`` with K normal slides.

        With the slide's ``patch_scores`` and a reference that keeps each patch's slide, the comparison is
        size-matched: the top-1% mean of the new slide and of each reference slide, both taken over the same number
        of patches (a seeded subsample of the larger one), so a reference of small slides applied to large ones, or
        the reverse, keeps its false-alarm rate (measured in tests/integration/test_reference_check.py). Otherwise
        the slide's ``statistic`` (``slide_statistic``) is compared with the stored ones.
        """
        if self.slide_scores is None or mode == "zero_shot":
            return None
        if patch_scores is not None and self.patch_slides is not None and self.slide_statistic == "top1":
            return self._matched_slide_p(self.normalised(patch_scores), mode)
        if not np.isfinite(statistic) or self.normalise == "slide":
            return None
        ref = self.slide_scores[:, MODES.index(mode)]
        return float((1 + np.sum(ref >= statistic)) / (ref.size + 1))

    def _matched_slide_p(self, scores: np.ndarray, mode: str, skip: int | None = None) -> float | None:
        from .maps import top_percent_mean

        if not scores.size:
            return None
        col = self._column(mode)
        mine: dict[int, float] = {}
        hits = 0
        others = [j for j in range(self.k_slides) if j != skip]
        for j in others:
            ref = col[self.patch_slides == j]
            s = min(scores.size, ref.size)
            if s not in mine:  # one subsample of the new slide per size: every reference slide of that size sees it
                mine[s] = top_percent_mean(_subsample(scores, s, 0))
            hits += top_percent_mean(_subsample(ref, s, 1000 + j)) >= mine[s]
        return float((1 + hits) / (len(others) + 1))

    def limits(self, fdr: float = FDR) -> list[str]:
        """What this reference cannot do, in sentences for people (empty when nothing needs saying)."""
        k = self.k_slides
        out = []
        if k == 0:
            out.append("the reference holds no normal slides: no slide p-value, and the false-alarm rate on other "
                       "slides is unchecked; calibrate on normal slides (5 or more)")
        elif k < MIN_SLIDES_WARN:
            out.append(f"a reference of {k} normal slide(s): false alarms on a new slide are not controlled (slides "
                       f"differ); calibrate on {MIN_SLIDES_WARN} or more")
        if 0 < k < MIN_SLIDES_DECISION:
            out.append(f"with {k} normal slide(s) the slide p-value cannot fall below {1 / (k + 1):.3g}, so a slide "
                       f"decision at {fdr:g} can never fire; {MIN_SLIDES_DECISION} or more slides are needed")
        return out

    def check(self, mode: str, alphas: tuple[float, ...] = (0.05, 0.01)) -> dict | None:
        """The lab's own check: each reference slide scored against the others (leave one slide out). Returns the
        false-alarm rate of its patches at each ``alpha`` (pooled, per slide, and their spread with a binomial 95%
        interval of the pooled rate), and of the slide p-value; None with fewer than 2 slides."""
        if self.patch_slides is None or self.k_slides < 2 or mode == "zero_shot":
            return None
        col = self._column(mode)
        stats = self.slide_scores[:, MODES.index(mode)]
        k = self.k_slides
        flagged = {a: [] for a in alphas}
        n_per = []
        slide_flags = dict.fromkeys(alphas, 0)
        for i in range(k):
            test, others = col[self.patch_slides == i], np.sort(col[self.patch_slides != i])
            if not test.size or others.size < MIN_CALIBRATION:
                continue
            above = others.size - np.searchsorted(others, test, side="left")
            p = (1.0 + above) / (others.size + 1.0)
            n_per.append(int(test.size))
            for a in alphas:
                flagged[a].append(int((p <= a).sum()))
            if self.slide_statistic == "top1":
                p_slide = self._matched_slide_p(test, mode, skip=i)
            else:
                rest = np.delete(stats, i)
                p_slide = (1 + np.sum(rest >= stats[i])) / (rest.size + 1)
            for a in alphas:
                slide_flags[a] += int(p_slide <= a)
        if not n_per:
            return None
        total = int(np.sum(n_per))
        out = {"k_slides": k, "n_patches": total, "unit": "the slide: each scored against the other slides",
               "normalise": self.normalise}
        for a in alphas:
            hits = int(np.sum(flagged[a]))
            per = [f / n for f, n in zip(flagged[a], n_per, strict=True)]
            lo, hi = clopper_pearson(hits, total)
            out[f"patch_rate_{a:g}"] = {"rate": hits / total, "ci95": [lo, hi], "per_slide_min": float(min(per)),
                                        "per_slide_max": float(max(per)), "per_slide_sd": float(np.std(per))}
            out[f"slide_rate_{a:g}"] = (slide_flags[a] / len(n_per)) if len(n_per) > 1 / a - 1 else None
        return out

    def describe(self) -> str:
        slides = f", {self.k_slides} normal slides" if self.slide_scores is not None else ""
        own = "; each slide on its own scale" if self.normalise == "slide" else ""
        return f"calibrated on {self.n} normal patches{slides}{own} ({self.source})"

    def to_dict(self) -> dict:
        """For provenance: the reference's size, source, and the centre and scale of each mode."""
        own = self.normalise == "slide"
        return {"n_patches": self.n, "n_slides": self.k_slides, "slide_statistic": self.slide_statistic,
                "source": self.source, "normalise": self.normalise,
                "z": ("(score - median) / (1.4826 MAD) of the slide itself" if own else
                      "(score - median) / (1.4826 MAD) of the reference"),
                "p_normal": ("(1 + #{reference >= score}) / (n + 1), the slide's and each reference slide's scores "
                             "standardised by their own median and 1.4826 MAD" if own else
                             "(1 + #{reference >= score}) / (n + 1)"),
                "centre_scale": {m: list(self.centre_scale(m)) for m in MODES}}

    def tensors(self) -> dict[str, torch.Tensor]:
        import torch

        out = {"calibration.patches": torch.from_numpy(self.patch_scores.copy())}
        if self.slide_scores is not None:
            out["calibration.slides"] = torch.from_numpy(self.slide_scores.copy())
        if self.patch_slides is not None:  # stored as float64 (checkpoints hold floating point tensors only)
            out["calibration.patch_slides"] = torch.from_numpy(self.patch_slides.astype(np.float64))
        return out

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], source: str, slide_statistic: str = "max_eroded",
                     normalise: str = "reference") -> Calibration | None:
        if "calibration.patches" not in tensors:
            return None
        slides = tensors.get("calibration.slides")
        per_patch = tensors.get("calibration.patch_slides")
        return cls(tensors["calibration.patches"].double().numpy(), source,
                   None if slides is None else slides.double().numpy(),
                   None if per_patch is None else per_patch.double().numpy().round().astype(np.int64),
                   slide_statistic, normalise)


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


def _median_scale(values: np.ndarray) -> tuple[float, float]:
    """(median, 1.4826 MAD) of the finite ``values``: the robust centre and SD that z is measured in."""
    v = values[np.isfinite(values)]
    med = float(np.median(v))
    return med, _MAD_TO_SD * float(np.median(np.abs(v - med)))


def _unscalable(values: np.ndarray) -> str | None:
    """Why ``values`` have no median and robust SD to standardise by (too few finite, or no spread), or None."""
    n = int(np.count_nonzero(np.isfinite(values)))
    if n < MIN_CALIBRATION:
        return f"has {n} scored patches, fewer than the {MIN_CALIBRATION} a median and robust SD need"
    if not _median_scale(values)[1] > 0:
        return "has no robust spread (more than half its scores are equal)"
    return None


def _standardise(values: np.ndarray) -> np.ndarray:
    """(values - median) / (1.4826 MAD), both of the finite values (NaN stay NaN)."""
    med, scale = _median_scale(values)
    return (values - med) / scale


def _subsample(values: np.ndarray, size: int, seed: int) -> np.ndarray:
    """``size`` of ``values`` drawn without replacement (seeded: the same every time), or all of them."""
    if values.size <= size:
        return values
    return np.random.default_rng(seed).choice(values, size, replace=False)


def clopper_pearson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """The exact binomial (1 - alpha) interval of k successes in n trials."""
    from scipy.stats import beta

    lo = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return lo, hi


def slide_calibration(scores: np.ndarray, slide_stats: dict, mode: str, calibration: Calibration | None, *,
                      patch_area_mm2: float | None, fdr: float = FDR, z: np.ndarray | None = None,
                      p: np.ndarray | None = None) -> dict:
    """Per-slide calibrated numbers: significant patches at ``fdr``, their area, max z, the slide p-value (of the
    statistic the reference holds, from ``slide_stats``: the slide scores), what the reference cannot do, and the
    lab's leave-one-slide-out check. ``z`` and ``p``: the patches' own, when the caller has them already."""
    if calibration is None:
        return {"calibrated": False, "note": "uncalibrated: scores are raw distances; see 'anonavila calibrate'"}
    s = np.asarray(scores, dtype=np.float64)
    if (why := calibration.unusable_for(s)) is not None:
        return {"calibrated": False, "note": why, "reference": calibration.describe()}
    sig = benjamini_hochberg(calibration.p(s, mode) if p is None else p, fdr)
    n_sig = int(sig.sum())
    floor = 1.0 / (calibration.n + 1)
    z = calibration.z(s, mode) if z is None else z
    # out of domain: the slide's median against the pooled reference as scored (with slide normalisation the
    # slide's own median z is 0 by construction)
    median_z = float(np.median(calibration.reference_z(s, mode))) if s.size else None
    out = median_z is not None and median_z > DOMAIN_Z
    return {"calibrated": True, "reference": calibration.describe(), "normalise": calibration.normalise,
            "fdr": fdr, "n_significant": n_sig,
            "area_significant_mm2": None if patch_area_mm2 is None else n_sig * patch_area_mm2,
            "max_z": float(z.max()) if s.size else None, "median_z": median_z,
            "out_of_domain": out,
            "domain_note": OUT_OF_DOMAIN.format(median_z=median_z, bound=DOMAIN_Z) if out else "",
            "p_slide": calibration.slide_p(slide_stats.get(calibration.slide_statistic, np.nan), mode, s),
            "p_slide_statistic": calibration.slide_statistic,
            "p_slide_floor": 1 / (calibration.k_slides + 1) if calibration.k_slides else None,
            "reference_limits": calibration.limits(fdr), "reference_check": calibration.check(mode), "p_floor": floor,
            # BH flags k patches only if the floor is at most fdr * k / m: fewer extreme patches stay unflagged
            "min_detectable": int(np.ceil(floor * s.size / fdr)) if s.size else None}
