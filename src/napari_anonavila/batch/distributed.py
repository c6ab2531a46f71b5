"""dask.distributed glue: one task per slide, retries for transient failures, a resumable cohort run.

No scoring logic here: each task calls the core's ``score_slide``. Deterministic input errors (a corrupt
slide, no tissue, a bad setting) are recorded, not retried; other exceptions are retried by dask up to
``retries`` times, and a worker that dies mid-slide has its task rescheduled by the scheduler. Outputs are
written atomically, so a slide is either complete or absent.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from .._atomic import atomic_write
from ..errors import AnonavilaError, BackendUnavailableError, OutputExistsError
from .cohort import COHORT_COLUMNS, BatchSettings, cohort_row, finished, merge_cohort, slide_out_dirs

__all__ = ["WORK_LOG", "run_batch", "score_one"]

logger = logging.getLogger(__name__)
WORK_LOG = "batch-work.log"  # one line per slide actually scored (appended by workers)


@lru_cache(maxsize=2)
def _detector(model: str, sha: str, device: str, precision: str = "float32"):
    """One loaded model per worker process (keyed by the checkpoint's hash and the precision)."""
    import torch

    from ..detector import Detector

    torch.set_num_threads(max(1, int(os.environ.get("ANONAVILA_TORCH_THREADS", "1"))))
    return Detector.load(model, device=device, precision=precision)


def _device() -> str:
    """This worker's device: one GPU per worker (by worker name) when there are GPUs, else the CPU."""
    import torch

    n = torch.cuda.device_count()
    if n == 0:
        return "cpu"
    try:
        from distributed import get_worker

        return f"cuda:{int(get_worker().name) % n}"
    except (ValueError, TypeError):
        return "cuda:0"


def score_one(slide: str, fingerprint: str, model: str, model_sha: str, out_dir: str, settings: BatchSettings,
              log_dir: str) -> dict:
    """The task: score one slide into ``out_dir``; return its cohort row. Raises only for transient failures."""
    from ..pipeline import score_slide
    from ..slide import open_slide

    t0 = time.perf_counter()
    try:
        for attempt in range(2):
            # a rescheduled task whose outputs were already complete (its worker died after writing them), or a
            # slide another run into the same --out has just finished
            done = finished(Path(out_dir), slide_fingerprint=fingerprint, checkpoint_sha=model_sha, settings=settings)
            if done is not None:
                return cohort_row(Path(slide), "ok", result=done, out_dir=Path(out_dir))
            det = _detector(model, model_sha, _device(), settings.precision)
            try:
                with open_slide(slide, mpp=settings.mpp) as sl:  # opened once: its size places the regions too
                    regions = settings.slide_regions(Path(slide), sl.dimensions_xy) if settings.regions else None
                    result = score_slide(det, sl, out_dir=out_dir, patch_um=settings.patch_um, regions=regions,
                                         patch_px=settings.patch_px, min_tissue=settings.min_tissue,
                                         mode=settings.mode, batch_size=settings.batch_size, overwrite=True,
                                         checkpoint={"path": model, "sha256": model_sha},
                                         extra={"batch_settings": settings.to_dict()})
                break
            except OutputExistsError:
                if attempt:
                    raise
                _wait_for_claim(Path(out_dir))  # another run is writing this slide: wait, then look again
    except (AnonavilaError, ValueError) as err:
        if isinstance(err, BackendUnavailableError):
            raise  # a worker without the model's package: let another worker try
        return cohort_row(Path(slide), "failed", error=f"{type(err).__name__}: {err}",
                          seconds=time.perf_counter() - t0, out_dir=Path(out_dir), fingerprint=fingerprint)
    with open(os.path.join(log_dir, WORK_LOG), "a", encoding="utf-8") as fh:  # O_APPEND: one short line is atomic
        fh.write(f"{slide}\t{os.getpid()}\n")
    return cohort_row(Path(slide), "ok", result=result, seconds=time.perf_counter() - t0, out_dir=Path(out_dir))


def _wait_for_claim(folder: Path, timeout_s: float = 6 * 3600) -> None:
    """Until no other run holds ``folder`` (each try claims it and lets go at once)."""
    from .._atomic import claimed_dir

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with claimed_dir(folder):
                return
        except OutputExistsError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def _client(scheduler: str | None, n_workers: int | None):
    """(client, local cluster or None, per-task resources): a local cluster gets one worker per GPU."""
    from distributed import Client, LocalCluster

    logging.getLogger("distributed").setLevel(logging.WARNING)  # the CLI shows its own progress
    if scheduler:
        return Client(scheduler), None, None
    import torch

    gpus = torch.cuda.device_count()
    n = n_workers or (gpus or max(1, (os.cpu_count() or 2) // 2))
    # every service on loopback: the scheduler, the workers and the dashboard are not reachable from other machines
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address="127.0.0.1:0", resources={"GPU": 1} if gpus else None,
                           silence_logs=logging.ERROR)
    return Client(cluster), cluster, {"GPU": 1} if gpus else None


def run_batch(slides: list[Path], model: str | os.PathLike, out: str | os.PathLike, *,
              settings: BatchSettings | None = None, scheduler: str | None = None, n_workers: int | None = None,
              retries: int = 2, labels: dict[str, int] | None = None, overwrite: bool = False,
              on_result: Callable[[dict], None] | None = None, log: Callable[[str], None] = logger.info) -> dict:
    """Score ``slides`` on a dask cluster; write ``cohort.csv`` (and metrics with ``labels``); return a report.

    Finished slides (complete outputs whose provenance matches slide, model and settings) are skipped. A complete
    result of another slide file in a slide's folder is never replaced without ``overwrite``: that slide fails.
    """
    from ..backends import sha256_file

    settings = settings or BatchSettings()
    from ..slide import open_slide

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = str(Path(model).resolve())
    sha = sha256_file(model)
    rows: dict[str, dict] = {}
    todo = []
    targets = slide_out_dirs(out, slides)
    slides = list(targets)  # the same file given twice is scored once
    for s in slides:
        target = targets[s]
        try:
            with open_slide(s, mpp=settings.mpp) as sl:
                fp = sl.fingerprint()
        except AnonavilaError as err:
            rows[str(s)] = cohort_row(s, "failed", error=f"{type(err).__name__}: {err}", out_dir=target)
            continue
        if (done := finished(target, slide_fingerprint=fp, checkpoint_sha=sha, settings=settings)) is not None:
            rows[str(s)] = cohort_row(s, "skipped", result=done, out_dir=target)
        elif not overwrite and (other := _result_of_another_slide(target, s, fp)):
            rows[str(s)] = cohort_row(s, "failed", out_dir=target, fingerprint=fp, error=(
                f"OutputExistsError: {target} holds the complete result of another slide ({other}); pass --overwrite "
                "to replace it, or use another --out"))
        else:
            todo.append((s, target, fp))
    log(f"{len(slides)} slide(s): {len(todo)} to score, {sum(r['status'] == 'skipped' for r in rows.values())} "
        f"already finished, {sum(r['status'] == 'failed' for r in rows.values())} unreadable")
    client, cluster, resources = _client(scheduler, n_workers) if todo else (None, None, None)
    try:
        if client is not None:
            if client.dashboard_link:
                log(f"dask dashboard: {client.dashboard_link}")
            rows.update(_score_on_cluster(client, todo, (model, sha, settings, str(out)), retries=retries,
                                          resources=resources, on_result=on_result, log=log))
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    ordered = [rows[str(s)] for s in slides]
    from ..export.tables import read_csv, write_csv

    previous = read_csv(out / "cohort.csv", ["slide", "status"]) if (out / "cohort.csv").is_file() else []
    table = merge_cohort(previous, ordered)  # an earlier run's slides stay in the table
    write_csv(out / "cohort.csv", COHORT_COLUMNS, ([r[c] for c in COHORT_COLUMNS] for r in table), overwrite=True)
    report = {"n": len(slides), "scored": len(todo), **{k: sum(r["status"] == k for r in ordered)
                                                        for k in ("ok", "skipped", "failed")}}
    if labels is not None:
        report["metrics"] = _evaluate(ordered, labels, out)
    return report


def _score_on_cluster(client, todo: list[tuple[Path, Path, str]], task_args: tuple, *, retries: int,
                      resources: dict | None, on_result: Callable[[dict], None] | None,
                      log: Callable[[str], None]) -> dict[str, dict]:
    """One task per (slide, out dir, fingerprint); each slide's cohort row as its task ends.

    A task that still fails after dask's own retries, or whose finished result was lost with its worker, is
    submitted once more as a new task without retries; one whose outputs are already complete returns at once.
    """
    from distributed import as_completed

    model, sha, settings, log_dir = task_args
    futures: dict = {}

    def submit(s: Path, t: Path, fp: str, attempt: int = 0):
        fut = client.submit(score_one, str(s), fp, model, sha, str(t), settings, log_dir,
                            retries=0 if attempt else retries,  # the second submission is the last try
                            key=f"score-{t.name}" + (f"-again{attempt}" if attempt else ""), pure=False,
                            resources=resources)
        futures[fut] = (s, t, fp, attempt)
        return fut

    rows: dict[str, dict] = {}
    pending = as_completed([submit(s, t, fp) for s, t, fp in todo])
    for fut in pending:
        s, t, fp, attempt = futures.pop(fut)
        try:
            row = fut.result()
        except Exception as err:  # retries exhausted, the worker died too often, or its result was lost
            if attempt < 1:
                log(f"{s.name}: {type(err).__name__}: {err}; submitting it once more")
                pending.add(submit(s, t, fp, attempt + 1))
                continue
            row = cohort_row(s, "failed", error=f"{type(err).__name__}: {err}", out_dir=t)
        rows[str(s)] = row
        if on_result:
            on_result(row)
    return rows


def _result_of_another_slide(folder: Path, slide: Path, fingerprint: str) -> str | None:
    """The slide recorded in ``folder``'s result when it is another slide: other content, at another absolute path.
    The same content anywhere is the same slide; the same file changed in place is scored again (its old result is
    stale); a relative path is never resolved against the working folder (results record absolute paths)."""
    prov = (_summary(folder) or {}).get("provenance") or {}
    recorded = prov.get("slide") if isinstance(prov.get("slide"), dict) else {}
    theirs, where = recorded.get("fingerprint_sha256"), recorded.get("path")
    if not (folder / "summary.json").is_file() or theirs == fingerprint:
        return None
    if isinstance(where, str) and os.path.isabs(where) and os.path.realpath(where) == os.path.realpath(slide):
        return None
    return str(where or "a slide it does not name")


def _summary(folder: Path) -> dict | None:
    import json

    try:
        return json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _evaluate(rows: list[dict], labels: dict[str, int], out: Path) -> dict:
    """Slide-level AUROC and AUPR (bootstrap CIs) of every slide score, over slides with a label and a score."""
    import json

    import numpy as np

    from ..maps import SLIDE_SCORE_NAMES
    from ..metrics import DECISIONS, bootstrap_metrics, decision_rates, flag_slides
    from ..slide import slide_stem

    usable = [r for r in rows if r["status"] in ("ok", "skipped") and slide_stem(r["slide"]) in labels
              and r["max"] != ""]
    y = np.array([labels[slide_stem(r["slide"])] for r in usable])
    result = {}
    for k in SLIDE_SCORE_NAMES:
        try:
            m = bootstrap_metrics(y, np.array([float(r[k]) for r in usable]), n_boot=2000, seed=0)
            result[k] = {name: v.to_dict() for name, v in m.items()}
        except ValueError as err:
            result[k] = {"error": str(err)}
    decisions = {}
    for col in DECISIONS:
        have = [r for r in usable if r.get(col, "") != ""]
        if have:
            flags = flag_slides(col, np.array([float(r[col]) for r in have]))
            decisions[col] = {"rule": DECISIONS[col], "n": len(have),
                              **decision_rates(np.array([labels[slide_stem(r["slide"])] for r in have]), flags)}
    with atomic_write(out / "cohort_metrics.json") as fh:
        json.dump({"n": len(usable), "metrics": result, "calibrated_decisions": decisions}, fh, indent=1)
    return result
