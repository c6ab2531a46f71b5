"""The heatmap's legend in words: what its colours are, on which scale, against which reference, made by which model,
and what the slide scores are; one text for the legend panel and the Score panel."""

from __future__ import annotations

from ..options import Z_RANGE
from .results import HEATMAP, result_layer

__all__ = ["legend_text", "scores_text"]


def scores_text(result) -> str:
    """A result's slide scores and calibrated numbers in one line."""
    sc = result.slide_scores()
    cal = result.calibrated_summary()
    if cal.get("out_of_domain"):
        verdict = (f"OUT OF THE MODEL'S DOMAIN (median z {cal['median_z']:.3g}): its z and its "
                   f"{cal['n_significant']} 'significant' patches are not findings and are not outlined; ")
    elif cal.get("calibrated") and cal.get("max_z") is not None:
        verdict = f"{cal['n_significant']} patches significant at FDR {result.fdr:.0%}, max z {cal['max_z']:.3g}; "
    else:
        verdict = "uncalibrated (no z or p-values); "
    return (f"{verdict}max {sc['max']:.3g}, top-1% {sc['top1']:.3g}; eroded: max {sc['max_eroded']:.3g}, "
            f"top-1% {sc['top1_eroded']:.3g}")


def legend_text(viewer, slide_layer, result, model: str | None = None) -> str:
    """The legend of ``slide_layer``'s heatmap: its title, scale, reference, model, slide scores and any warning
    (out of the model's domain). ``model`` describes the model of a live result (a reopened one says its own)."""
    heat = result_layer(viewer, slide_layer, HEATMAP) if slide_layer is not None else None
    if heat is None or result is None:
        return "No heatmap for this slide yet: score it, or open a result folder."
    meta = heat.metadata
    lines = [f"Heatmap: {meta.get('label', 'anomaly score')}"]
    if meta.get("scale") == "fixed":
        lines.append(f"Colours: z from {Z_RANGE[0]:g} to {Z_RANGE[1]:g}, the same on every slide; cells above "
                     f"{Z_RANGE[1]:g} are beyond the scale (brightest colour); outlines: significant patches.")
    else:
        lines.append("Colours: stretched over this slide's own scores (2nd to 99.5th percentile): compare slides by "
                     "their numbers, not their colours.")
    cal = result.calibrated_summary()
    if cal.get("calibrated"):
        lines.append(f"Reference: {cal['reference']}")
    elif cal.get("reference"):  # a reference that could not apply to this slide (too few patches for its own scale)
        lines.append(f"Reference: {cal['reference']}; not applied: {cal.get('note', '')}")
    else:
        lines.append("Reference: none (uncalibrated model: raw distances; 'anonavila calibrate' adds z and p-values)")
    lines.append(f"Model: {result.provenance.get('model') or model or 'unknown'}")
    if result.folder is not None:
        lines.append(f"Result folder: {result.folder}")
    lines.append(f"Slide: {scores_text(result)}")
    check = cal.get("reference_check")
    if check:
        r = check["patch_rate_0.05"]
        lines.append(f"Reference check: {r['rate']:.1%} of a held-out normal slide's patches at p <= 0.05 (each of "
                     f"{check['k_slides']} slides against the others; per slide {r['per_slide_min']:.1%}-"
                     f"{r['per_slide_max']:.1%})")
    lines += [f"Note: {line}" for line in cal.get("reference_limits") or []]
    if cal.get("out_of_domain"):
        lines.append(f"WARNING: {cal['domain_note']}.")
    return "\n".join(lines)
