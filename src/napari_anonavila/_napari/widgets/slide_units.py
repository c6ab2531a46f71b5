"""The Score panel's units: what unit the chosen slide is in, its mpp where the file gives none, and the patch field
in that unit (microns for a slide with mpp, level-0 pixels for one without)."""

from __future__ import annotations

from magicgui.widgets import FloatSpinBox, Label
from napari.utils.notifications import show_error

from ...slide.base import MPP_RANGE
from ..tags import slide_of
from ..units import give_mpp, patch_unit, units_text

__all__ = ["SlideUnits"]


class SlideUnits:
    """The units line, the slide-mpp field and the patch field of one slide combo box."""

    def __init__(self, session, slide_combo) -> None:
        self.session, self.slide_combo = session, slide_combo
        self.units = Label(value="")
        self.slide_mpp = FloatSpinBox(label="slide mpp", value=0.0, min=0.0, max=MPP_RANGE[1], step=0.05,
                                      tooltip="microns per pixel of a slide whose file does not say (0.25 at 40x, "
                                              "0.5 at 20x): patch sizes then work in microns and the slide lines up "
                                              "with other slides; 0 leaves it in pixels")
        self.patch = FloatSpinBox(label="patch (um)", value=128.0, min=8.0, max=8192.0, step=16.0,
                                  tooltip="patch field: microns for a slide with mpp (the paper's 128 um), level-0 "
                                          "pixels for a slide without (256 px)")
        self.unit = "um"
        self.slide_mpp.changed.connect(self._on_mpp)

    def show(self, *_) -> None:
        """Say the slide's units; offer the mpp field only for a slide whose file gives none (or whose mpp was given
        here); the patch field in the slide's unit (microns, else level-0 pixels)."""
        layer = self.slide_combo.value
        slide = slide_of(layer) if layer is not None else None
        self.units.value = units_text(slide)
        self.units.native.setStyleSheet("color: #ffb000;" if slide is not None and not slide.mpp else "")
        self.slide_mpp.visible = slide is not None and slide.mpp_source != "file"
        with self.slide_mpp.changed.blocked():
            self.slide_mpp.value = slide.mpp if slide is not None and slide.mpp else 0.0
        unit, default = patch_unit(slide)
        if unit != self.unit:
            self.unit = unit
            self.patch.label = f"patch ({unit})"
            self.patch.value = default

    def patch_size(self, slide) -> tuple[float | None, int | None]:
        """(patch_um, patch_px) of a run on ``slide``: one of the two, in the field's unit."""
        if self.unit == "um" and bool(slide.mpp):
            return self.patch.value, None
        return None, round(self.patch.value)

    def set_mpp(self, layer, mpp: float) -> None:
        """Give a slide without mpp in its file its microns per pixel (see :func:`..units.give_mpp`)."""
        give_mpp(layer, mpp, has_result=self.session.result_of(layer) is not None)
        self.show()

    def _on_mpp(self, value: float) -> None:
        try:
            self.set_mpp(self.slide_combo.value, value)
        except ValueError as err:
            show_error(str(err))
            self.show()
