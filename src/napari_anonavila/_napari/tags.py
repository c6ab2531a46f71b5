"""What the plugin's layers carry: the open slide behind a slide layer, the result it was reopened with, and the link
that ties result layers to their slide (in layer metadata); and the napari object behind a plugin's proxy."""

from __future__ import annotations

from ..slide import Slide

__all__ = ["link_of", "saved_result_of", "slide_of", "tag", "unwrap"]


def unwrap(obj):
    """The napari object behind a plugin's public-only proxy (or the object itself)."""
    return getattr(obj, "__wrapped__", obj)


def saved_result_of(layer):
    """The result a slide layer was opened with from its result folder, else None."""
    return layer.metadata.get("anonavila_saved") if layer is not None and hasattr(layer, "metadata") else None


def slide_of(layer) -> Slide | None:
    """The open Slide behind an image layer made by our reader, else None."""
    s = layer.metadata.get("anonavila_slide") if hasattr(layer, "metadata") else None
    return s if isinstance(s, Slide) else None


def link_of(slide_layer) -> str:
    """What a slide's result layers name as theirs: the link the reader gave a reopened result, else the layer's
    napari id."""
    return slide_layer.metadata.get("anonavila_link") or slide_layer.unique_id


def tag(kwargs: dict, slide_name: str, link: str, kind: str) -> dict:
    """Name a result layer after its slide and mark whose it is."""
    meta = {**kwargs.get("metadata", {}), "anonavila_result": kind, "anonavila_for": link}
    return {**kwargs, "name": f"{kind} [{slide_name}]", "metadata": meta}
