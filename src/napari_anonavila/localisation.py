"""Localisation measured as the paper and Camelyon16 measure it.

- **Patch level**: AUROC and AUPR (2000-resample bootstrap CIs) of patch scores against patch labels, per slide and
  pooled; a patch is abnormal when at least ``lesion_fraction`` of its area lies in a lesion (annotations), or
  when the ``abnormal_percent`` of its file name (the authors' ``{WSI}_{x}_{y}_{abnormal_percent}``) is above
  ``percent_threshold``.
- **Lesion level, Camelyon16's protocol**: the evaluation mask is the lesions rasterised at ``mask_um`` per pixel,
  grown by 75/2 um, holes filled, labelled with 8-connectivity; a lesion whose major axis is under 275 um (an
  isolated tumour cell cluster, under 200 um before growing) counts neither as a hit nor as a false positive.
  Detections are the heatmap's local maxima (3x3), each at its patch centre with its score. A detection inside a
  lesion hits it (the lesion keeps its highest score); one outside every lesion and ITC is a false positive. Over a
  cohort (slides without lesions are normal) the threshold sweep gives sensitivity against mean false positives per
  slide; the FROC score is the mean sensitivity at 1/4, 1/2, 1, 2, 4 and 8 false positives per slide.
- **Region overlap** of the significant set with the lesion patches: Dice, IoU, precision and recall.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .metrics import bootstrap_metrics

__all__ = ["FP_RATES", "LESION_FRACTION", "Detections", "LesionMask", "detections_of", "froc", "lesion_mask",
           "overlap", "patch_labels", "patch_metrics"]

FP_RATES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
LESION_FRACTION = 0.5  # a patch is a lesion patch when at least half its area is lesion
GROW_UM = 75.0  # Camelyon16: lesions grown by half of this (75/2 um, five tumour cells)
ITC_UM = 275.0  # Camelyon16: a lesion whose major axis (after growing) is under this is an isolated tumour cell cluster


def patch_labels(result, lesions, fraction: float = LESION_FRACTION) -> np.ndarray:
    """0/1 per patch of ``result``: at least ``fraction`` of its area in ``lesions`` (a RegionSet; None: normal)."""
    if lesions is None:
        return np.zeros(len(result), int)
    return (lesions.fractions(result.xy_l0, result.patch_size_l0) >= fraction).astype(int)


def patch_metrics(labels: np.ndarray, scores: np.ndarray, *, n_boot: int = 2000, seed: int = 0) -> dict | str:
    """AUROC and AUPR with bootstrap CIs, or the reason there are none (one class only)."""
    y = np.asarray(labels, int)
    if y.size == 0 or y.min() == y.max():
        return f"labels are all {'abnormal' if y.size and y[0] else 'normal'}: no AUROC"
    return {k: v.to_dict() for k, v in bootstrap_metrics(y, np.asarray(scores, float), n_boot=n_boot,
                                                          seed=seed).items()}


def overlap(predicted: np.ndarray, truth: np.ndarray) -> dict:
    """Dice, IoU, precision and recall of a predicted patch set against the true one (None where undefined)."""
    p, t = np.asarray(predicted, bool), np.asarray(truth, bool)
    tp, fp, fn = int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum())

    def ratio(a: int, b: int) -> float | None:
        return a / b if b else None

    return {"tp": tp, "fp": fp, "fn": fn, "dice": ratio(2 * tp, 2 * tp + fp + fn), "iou": ratio(tp, tp + fp + fn),
            "precision": ratio(tp, tp + fp), "recall": ratio(tp, tp + fn)}


@dataclass(frozen=True)
class LesionMask:
    """Camelyon16's evaluation mask of one slide: ``labels`` (0: none) at ``um_per_px``; ``itc`` the labels of
    isolated tumour cell clusters."""

    labels: np.ndarray
    um_per_px: float
    downsample: float  # level-0 pixels per mask pixel
    itc: frozenset[int]

    @property
    def n_lesions(self) -> int:
        return int(self.labels.max()) - len(self.itc) if self.labels.size else 0

    def label_at(self, xy_l0: np.ndarray) -> np.ndarray:
        """The lesion label under level-0 points (0 outside every lesion)."""
        xy = np.asarray(xy_l0, float).reshape(-1, 2)
        c = np.clip((xy[:, 0] / self.downsample).astype(int), 0, self.labels.shape[1] - 1)
        r = np.clip((xy[:, 1] / self.downsample).astype(int), 0, self.labels.shape[0] - 1)
        return self.labels[r, c]


def lesion_mask(lesions, dimensions_xy: tuple[int, int], mpp: float, *, mask_um: float = 8.0) -> LesionMask:
    """The evaluation mask of ``lesions`` (a RegionSet) on a slide of ``dimensions_xy`` level-0 pixels at ``mpp``:
    rasterised at ``mask_um`` per pixel, grown by 75/2 um, holes filled, 8-connected labels, ITCs marked."""
    from scipy import ndimage
    from skimage.draw import polygon as fill_polygon
    from skimage.measure import regionprops

    ds = mask_um / mpp
    w, h = (int(np.ceil(v / ds)) for v in dimensions_xy)
    raster = np.zeros((h, w), bool)
    if lesions is not None:
        import shapely

        for r in lesions.regions:
            for part in shapely.get_parts(r.geometry):  # mask pixel (r, c) is level-0 [c ds, (c + 1) ds): its
                ext = np.asarray(part.exterior.coords) / ds - 0.5  # centre, where skimage tests it, is c + 0.5
                rr, cc = fill_polygon(ext[:, 1], ext[:, 0], raster.shape)
                raster[rr, cc] = True
                for hole in part.interiors:
                    hc = np.asarray(hole.coords) / ds - 0.5
                    rr, cc = fill_polygon(hc[:, 1], hc[:, 0], raster.shape)
                    raster[rr, cc] = False
        if lesions.mask is not None:
            m = lesions.mask
            ys = ((np.arange(h) + 0.5) * ds / m.downsample[1]).astype(int).clip(0, m.labels.shape[0] - 1)
            xs = ((np.arange(w) + 0.5) * ds / m.downsample[0]).astype(int).clip(0, m.labels.shape[1] - 1)
            raster |= m.labels[np.ix_(ys, xs)] > 0
    grow_px = GROW_UM / 2 / mask_um
    grown = ndimage.distance_transform_edt(~raster) < grow_px if raster.any() else raster
    filled = ndimage.binary_fill_holes(grown)
    labels, _n = ndimage.label(filled, structure=np.ones((3, 3), bool))
    itc = frozenset(int(p.label) for p in regionprops(labels) if p.major_axis_length * mask_um < ITC_UM)
    return LesionMask(labels.astype(np.int32), mask_um, ds, itc)


@dataclass(frozen=True)
class Detections:
    """Candidate lesion locations of one slide: level-0 (x, y) points with their scores."""

    xy_l0: np.ndarray
    score: np.ndarray


def detections_of(result, values: str = "score") -> Detections:
    """The heatmap's local maxima (3x3, NaN-aware) at their patches' centres, with their ``values``."""
    from scipy import ndimage

    heat = result.heatmap(values=values)
    filled = np.where(np.isnan(heat), -np.inf, heat)
    peak = (filled == ndimage.maximum_filter(filled, size=3, mode="constant", cval=-np.inf)) & np.isfinite(filled)
    rr, cc = np.nonzero(peak)
    p = result.patch_size_l0
    x0, y0 = result.grid.origin_xy_l0
    xy = np.stack([x0 + (cc + 0.5) * p, y0 + (rr + 0.5) * p], axis=1) if rr.size else np.zeros((0, 2))
    return Detections(xy, heat[rr, cc])


def froc(slides: list[tuple[Detections, LesionMask]]) -> dict:
    """Camelyon16's FROC over ``slides`` (each: its detections and its evaluation mask; a normal slide's mask has
    no lesions), computed as their public evaluation computes it: per slide, the scores of false positives and each
    lesion's best hit (0 for a missed lesion); thresholds at every distinct one of those scores but the lowest; at
    each, false positives per slide and sensitivity; sensitivity at ``FP_RATES`` by linear interpolation."""
    fp_scores, tp_scores, n_lesions = [], [], 0
    for det, mask in slides:
        labels = mask.label_at(det.xy_l0) if len(det.score) else np.zeros(0, int)
        best = {lab: 0.0 for lab in range(1, int(mask.labels.max()) + 1) if lab not in mask.itc}
        n_lesions += len(best)
        for lab, score in zip(labels.tolist(), det.score.tolist(), strict=True):
            if lab == 0:
                fp_scores.append(score)
            elif lab in best:
                best[lab] = max(best[lab], score)
        tp_scores += list(best.values())
    fp_a, tp_a = np.asarray(fp_scores, float), np.asarray(tp_scores, float)
    thresholds = sorted(set(fp_scores) | set(tp_scores))[1:]
    fps = [float((fp_a >= t).sum()) / max(len(slides), 1) for t in thresholds] + [0.0]
    sens = [float((tp_a >= t).sum()) / n_lesions if n_lesions else 0.0 for t in thresholds] + [0.0]
    at = np.interp(FP_RATES, fps[::-1], sens[::-1]) if n_lesions else [None] * len(FP_RATES)
    return {"n_slides": len(slides), "n_lesions": n_lesions, "fp_per_slide": fps, "sensitivity": sens,
            "sensitivity_at": {str(r): (float(v) if v is not None else None) for r, v in zip(FP_RATES, at,
                                                                                           strict=True)},
            "froc_score": float(np.mean(at)) if n_lesions else None}
