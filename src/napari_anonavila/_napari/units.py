"""A slide's units in the window: microns when its file (or the user) gives its mpp, else pixels, said plainly; and
the patch field in the unit the slide really has."""

from __future__ import annotations

from napari.utils.notifications import show_info

from ..grid import DEFAULT_PATCH_PX, DEFAULT_PATCH_UM
from ..slide.base import check_user_mpp
from .tags import slide_of

__all__ = ["give_mpp", "patch_unit", "units_text"]


def units_text(slide) -> str:
    """One line on a slide's units, for the panel: where its mpp came from, or that it is in pixels."""
    if slide is None:
        return ""
    if slide.mpp and slide.mpp_source == "file":
        return f"microns: {slide.mpp:.4g} um/px (from the file)"
    if slide.mpp:
        return f"microns: {slide.mpp:.4g} um/px (given here)"
    return ("PIXELS: the file gives no microns per pixel; sizes are in level-0 pixels and the slide does not line up "
            "with slides in microns. Give its mpp below to work in microns")


def patch_unit(slide) -> tuple[str, float]:
    """(unit, default size) of the patch field for ``slide``: microns with an mpp, else level-0 pixels."""
    return ("um", DEFAULT_PATCH_UM) if slide is not None and slide.mpp else ("px", float(DEFAULT_PATCH_PX))


def give_mpp(layer, mpp: float, *, has_result: bool) -> None:
    """Give a slide without mpp in its file its microns per pixel: the slide layer (and its results' layers when
    drawn next) then work in microns. Refused once the slide has a result made in pixels."""
    slide = slide_of(layer) if layer is not None else None
    if slide is None or not mpp:
        return
    check_user_mpp(mpp)
    if slide.mpp_source == "file":
        raise ValueError(f"{slide.path.name}: its file gives {slide.mpp:g} um/px; that is used")
    if has_result:
        raise ValueError(f"{slide.path.name} already has a result made in pixels; open the slide again and set "
                         "its mpp before scoring it")
    slide.mpp, slide.mpp_source = float(mpp), "user"
    layer.scale = (float(mpp), float(mpp))
    layer.units = ("um", "um")
    layer.metadata.update(mpp=float(mpp), mpp_source="user")
    show_info(f"{slide.path.name}: {mpp:g} um per pixel (given here); patch sizes are in microns")
