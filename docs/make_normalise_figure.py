"""docs/images/slide-normalisation.png and the numbers of docs/calibration.md's "Each slide on its own scale":

- left, model-free: new normal slides with a slide effect (level and spread) against a reference of five normal
  slides, as scored (``--normalise reference``) and each slide on its own scale (``--normalise slide``);
- right, the demo model on 20 synthetic normal slides (stain and outline varied) and real CMU-1 tissue: each slide
  scored against the others (the leave-one-slide-out check ``calibrate`` prints), in both normalisations.

Run from the repo root: ``.venv/bin/python docs/make_normalise_figure.py`` (about 5 minutes)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from napari_anonavila.calibration import MODES, Calibration
from napari_anonavila.maps import top_percent_mean

OUT = Path(__file__).parent / "images" / "slide-normalisation.png"
EFFECTS = (0.0, 0.5, 1.0, 1.5, 2.0)


def simulated_slides(rng, k: int, effect_sd: float, n: int = 400) -> list[np.ndarray]:
    """Heavy-tailed (t, 5 df) patch scores; each slide shifted by effect_sd within-slide SDs and scaled."""
    return [1e-3 + (rng.normal(0, effect_sd) + np.exp(rng.normal(0, 0.3 * effect_sd)) * rng.standard_t(5, n)) * 1e-4
            for _ in range(k)]


def reference(tables: list[np.ndarray], normalise: str) -> Calibration:
    table = np.concatenate(tables)
    if table.ndim == 1:
        table = np.tile(table[:, None], (1, len(MODES)))
    owner = np.concatenate([np.full(len(t), i) for i, t in enumerate(tables)])
    stats = np.array([[top_percent_mean(np.asarray(t).reshape(len(t), -1)[:, 0])] * 3 for t in tables])
    return Calibration(table, "figure", stats, owner, "top1", normalise)


def simulation(ax) -> None:
    rng = np.random.default_rng(0)
    for how, colour in (("reference", "tab:red"), ("slide", "tab:blue")):
        mean, lo, hi = [], [], []
        for effect in EFFECTS:
            rates = []
            for _ in range(40):
                cal = reference(simulated_slides(rng, 5, effect), how)
                rates += [float((cal.p(s, "sum") <= 0.05).mean()) for s in simulated_slides(rng, 5, effect)]
            r = np.asarray(rates) * 100
            mean.append(r.mean())
            lo.append(np.percentile(r, 5))
            hi.append(np.percentile(r, 95))
            print(f"simulation effect {effect:g} SD, {how}: mean {r.mean():.1f}%, sd {r.std():.1f}, 5-95% "
                  f"{lo[-1]:.1f}-{hi[-1]:.1f}%")
        ax.plot(EFFECTS, mean, "o-", color=colour, label=f"--normalise {how}: mean")
        ax.fill_between(EFFECTS, lo, hi, color=colour, alpha=0.2, label="5-95% of slides")
    ax.axhline(5, color="black", ls=":", lw=1)
    ax.set_xlabel("slide effect (within-slide SDs)", fontsize=8)
    ax.set_ylabel("% of a new normal slide's patches at p <= 0.05", fontsize=8)
    ax.set_title("simulation: 5 reference slides, 200 new slides per point", fontsize=9)
    ax.legend(fontsize=7)


def demo_slides(ax) -> None:
    from make_reference_figure import reference_tables  # (docs/: the same slides and model as that figure)

    _, tables = reference_tables()
    n = len(tables)
    width = 0.4
    for shift, how, colour in ((-width / 2, "reference", "tab:red"), (width / 2, "slide", "tab:blue")):
        cal = reference(tables, how)
        check = cal.check("sum")
        col = cal._column("sum")
        per = []
        for i in range(n):
            own, others = col[cal.patch_slides == i], np.sort(col[cal.patch_slides != i])
            per.append(float(((1 + others.size - np.searchsorted(others, own, side="left")) / (others.size + 1)
                              <= 0.05).mean()))
        r = check["patch_rate_0.05"]
        print(f"{n} slides, --normalise {how}: pooled {r['rate']:.1%} (95% CI {r['ci95'][0]:.1%}-{r['ci95'][1]:.1%})"
              f", per slide {r['per_slide_min']:.1%}-{r['per_slide_max']:.1%} (sd {r['per_slide_sd']:.1%}); "
              f"slides at p_slide <= 0.05: {check['slide_rate_0.05']}")
        ax.bar(np.arange(n) + shift, np.array(per) * 100, width, color=colour,
               label=f"--normalise {how}: pooled {r['rate']:.1%}, per slide {r['per_slide_min']:.0%}-"
                     f"{r['per_slide_max']:.0%}")
    ax.axhline(5, color="black", ls=":", lw=1)
    ax.set_xticks(range(n), [f"n{i}" for i in range(20)] + ["CMU-1"] * (n - 20), rotation=70, fontsize=6)
    ax.set_ylabel("% of the slide's patches at p <= 0.05", fontsize=8)
    ax.set_title("each normal slide against the others (demo model)", fontsize=9)
    ax.legend(fontsize=7)


def main() -> None:
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), dpi=110, gridspec_kw={"width_ratios": [10, 16]})
    simulation(axes[0])
    demo_slides(axes[1])
    fig.suptitle("Each slide on its own scale: the false-alarm rate a new normal slide gets", fontsize=9)
    fig.tight_layout()
    fig.savefig(OUT)
    print(OUT)


if __name__ == "__main__":
    main()
