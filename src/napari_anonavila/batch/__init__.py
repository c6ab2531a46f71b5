"""Cohort scale: many slides scored as independent dask.distributed tasks, resumable and failure-isolated."""

from .cohort import BatchSettings, expand_inputs
from .distributed import run_batch

__all__ = ["BatchSettings", "expand_inputs", "run_batch"]
