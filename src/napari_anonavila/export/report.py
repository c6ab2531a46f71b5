"""A one-page, self-contained HTML report per slide: overlay, colour bar, slide scores, top-k with terms."""

from __future__ import annotations

import base64
import html
import io
import os
from pathlib import Path

import numpy as np

from .._atomic import atomic_write, check_writable
from ..result import SlideResult

__all__ = ["write_report"]


def _png(img: np.ndarray) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _terms(cell: str) -> str:
    return "<br>".join(html.escape(t.replace(":", " (") + ")") for t in cell.split("|") if t)


def _calibration_html(result: SlideResult, prov: dict) -> str:
    """What the calibrated numbers say about this slide, or that there are none."""
    cal = prov.get("calibration")
    if not result.calibrated or not isinstance(cal, dict):
        return ("<p><b>Uncalibrated:</b> the scores are raw distances with no reference to normal tissue; compare "
                "slides by them only with care. <code>anonavila calibrate</code> adds z and p-values.</p>")
    n_sig = int(np.sum(result.significant()))
    size_um = (prov.get("grid") or {}).get("patch_size_um")
    area = f" ({n_sig * (size_um / 1000) ** 2:.3g} mm&sup2;)" if isinstance(size_um, (int, float)) else ""
    slide_cal = result.calibrated_summary()
    domain = (f'<p style="background:#f8d7da;border:1px solid #d9534f;padding:8px"><b>Out of the model\'s domain:</b> '
              f"{html.escape(slide_cal['domain_note'])}.</p>" if slide_cal.get("out_of_domain") else "")
    check = slide_cal.get("reference_check")
    notes = "".join(f"<li>{html.escape(line)}</li>" for line in slide_cal.get("reference_limits") or [])
    if check:
        r = check["patch_rate_0.05"]
        notes = (f"<li>The lab's own check: each of {check['k_slides']} normal reference slides scored against the "
                 f"others puts {r['rate']:.1%} of its patches at p &le; 0.05 (95% CI {r['ci95'][0]:.1%}-"
                 f"{r['ci95'][1]:.1%}; per slide {r['per_slide_min']:.1%}-{r['per_slide_max']:.1%}).</li>") + notes
    domain += f"<ul>{notes}</ul>" if notes else ""
    return domain + (f"<p>Against {int(cal.get('n_patches', 0))} normal reference patches "
            f"({html.escape(str(cal.get('source', '')))}): <b>{n_sig} of {len(result)} patches significant</b> at a "
            f"{result.fdr:.0%} false-discovery rate{area}; max z "
            f"{float(np.max(result.z)) if len(result) else float('nan'):.2f}. "
            "z is robust standard deviations above normal tissue; p_normal the share of normal reference patches "
            "scoring at least as high; * marks significant patches.</p>")


def write_report(path: str | os.PathLike, result: SlideResult, *, overlay_png: bytes, slide=None, top_k: int = 10,
                 overwrite: bool = False) -> Path:
    """Write the HTML report; ``slide`` (open) adds thumbnails of the top-k patches."""
    from ..splits import describe_split

    path = check_writable(path, overwrite=overwrite)
    s = result.slide_scores()
    prov = result.provenance or {}
    xy, sig, review, size = result.xy_l0, result.significant(), result.review_states(), result.patch_size_l0
    rows = []
    for r, i in enumerate(result.top_k(top_k), start=1):
        thumb = ""
        if slide is not None:
            lvl = slide.best_level(size / 160)
            side = max(1, round(size / slide.level_downsamples[lvl]))
            img = slide.read_region((int(xy[i, 0]), int(xy[i, 1])), lvl, (side, side))
            thumb = f'<img src="{_png(img)}" width="160" height="160">'
        state = review.get(int(i), "unreviewed")
        cal = (f"<td>{result.z[i]:.2f}</td><td>{result.p_normal[i]:.3g}{' *' if sig[i] else ''}</td>"
               if result.calibrated else "")
        normal, abnormal = result.explain(int(i))
        rows.append(f"<tr><td>{r}</td><td>{thumb}</td><td>{result.score[i]:.4g}</td>{cal}"
                    f"<td>({int(xy[i, 0])}, {int(xy[i, 1])})</td><td>{_terms(abnormal)}</td>"
                    f"<td>{_terms(normal)}</td><td>{state}</td></tr>")
    overlay = "data:image/png;base64," + base64.b64encode(overlay_png).decode()
    fmt = lambda v: "n/a" if v is None or not np.isfinite(v) else f"{v:.4g}"  # noqa: E731
    model = html.escape(str(prov.get("model") or prov.get("backend", {}).get("spec", "?")))
    demo = ('<p style="background:#fff3cd;border:1px solid #e0a800;padding:8px"><b>Demo model:</b> random weights '
            "with no pathology knowledge. These scores show the pipeline working, not tissue abnormality.</p>"
            if prov.get("demo_model") else "")
    name = html.escape(Path(str(result.slide.get("path", "slide"))).name)
    cal_head = "<th>z</th><th>p_normal</th>" if result.calibrated else ""
    doc = f"""<!doctype html><html><head><meta charset="utf-8"><title>Anomaly report: {name}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}result{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top;font-size:13px}}th{{background:#eee}}</style></head>
<body><h1>Anomaly report: {name}</h1>
{demo}<p>Model: {model}. Scoring mode {html.escape(str(prov.get('scoring_mode', '?')))};
{len(result)} patches of {result.patch_size_l0} level-0 px; created {html.escape(str(prov.get('created', '?')))}.
{html.escape(describe_split((prov.get('detector_info') or {}).get('centroid_split')))}.
Full provenance is in the JSON sidecar.</p>
<h2>Slide scores</h2><result><tr><th></th><th>max</th><th>top-1% mean</th></tr>
<tr><th>raw</th><td>{fmt(s['max'])}</td><td>{fmt(s['top1'])}</td></tr>
<tr><th>3x3 eroded</th><td>{fmt(s['max_eroded'])}</td><td>{fmt(s['top1_eroded'])}</td></tr></result>
<h2>Heatmap</h2><img src="{overlay}" style="max-width:100%">
<h2>Calibration</h2>{_calibration_html(result, prov)}
<h2>Top {top_k} patches</h2><result><tr><th>rank</th><th>patch</th><th>score</th>{cal_head}<th>level-0 (x, y)</th>
<th>abnormal terms</th><th>normal terms</th><th>review</th></tr>{''.join(rows)}</result>
</body></html>"""
    with atomic_write(path, encoding="utf-8") as fh:
        fh.write(doc)
    return path
