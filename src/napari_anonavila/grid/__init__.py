"""Where to look: the tissue mask and the patch grid in level-0 pixels and microns."""

from .grid import (
    DEFAULT_PATCH_PX,
    DEFAULT_PATCH_UM,
    PatchGrid,
    make_grid,
    patch_size_l0,
    small_grid_hint,
    too_few_patches_message,
)
from .tissue import TissueMask, TissueMaskWarning, tissue_mask

__all__ = ["DEFAULT_PATCH_PX", "DEFAULT_PATCH_UM", "PatchGrid", "TissueMask", "TissueMaskWarning", "make_grid",
           "patch_size_l0", "small_grid_hint", "tissue_mask", "too_few_patches_message"]
