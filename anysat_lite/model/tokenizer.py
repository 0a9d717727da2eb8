"""Scale-adaptive tokenization: a patch size in metres becomes sub-patches at each sensor's GSD.

For a patch of ``P`` metres and a sensor whose sub-patches measure ``s`` metres
(``subpatch_px * gsd``), every patch holds ``g x g`` sub-patches with ``g = P / s`` (``g = P / 10``
when ``P`` is not a multiple of ``s``, see the note):

================  ======  ============  ======================  ==================
sensor            GSD     sub-patch     P = 10 m                P = 60 m
================  ======  ============  ======================  ==================
aerial(-flair)    0.2 m   10 px = 2 m   5 x 5                   30 x 30
spot              1 m     10 px = 10 m  1 x 1                   6 x 6
naip              1.25 m  8 px = 10 m   1 x 1                   6 x 6
s2, s1(-asc), l8  10 m    1 px = 10 m   1 x 1                   6 x 6
l7, alos          30 m    1 px = 30 m   1 x 1 (see the note)    2 x 2
modis             250 m   the tile      one token per tile      one token per tile
================  ======  ============  ======================  ==================

Note: when ``P`` is not a multiple of a coarse sensor's sub-patch (l7 at P = 10 or 20 m), the
sub-patch map is first repeated onto a 10 m grid (nearest neighbour, ``SubPatchLayout.upsample``),
which the official code does not support.

**Sub-patch order.**  The sub-patch encoder gives the ``k``-th sub-patch of a patch the
position code of grid cell ``(k // g, k % g)``, and ``output="dense"`` puts it back there.
With ``order="geometric"`` the sequence is row-major over the ground, so codes and dense
outputs are where the pixels are.  With ``order="official"`` (what the released weights
were trained with) the patch is first cut into 10 m *cells*, cells row-major, then the
sub-patches of each cell row-major.  The two agree whenever a cell is one sub-patch
(every sensor with sub-patches of 10 m or more, and any sensor at P = 10 m); they differ
for the 0.2 m aerial sensors at P > 10 m, where the official dense output is therefore
reordered inside each patch, in strips of 5 sub-patches (10 m wide, 2 m tall).  :func:`load_official`
and the ``geoplex`` preset use ``"official"``; the other pretraining presets use ``"geometric"``.
"""

from __future__ import annotations

from dataclasses import dataclass

from einops import rearrange, repeat
from torch import Tensor

from ..errors import UserError
from ..sensors import Sensor

__all__ = ["ORDERS", "SubPatchLayout", "subpatch_layout", "group_subpatches", "ungroup_subpatches", "ratio"]


def ratio(a: float, b: float) -> int | None:
    """``a / b`` if it is (numerically) a positive integer, else ``None``."""
    r = a / b
    n = round(r)
    return n if n >= 1 and abs(r - n) < 1e-6 else None


@dataclass(frozen=True)
class SubPatchLayout:
    """How one sensor's sub-patch map is cut into patches of ``patch_m`` metres.

    Attributes:
        g: sub-patches per patch side (``g * g`` per patch).
        cell: sub-patches per side of the ordering cell (official order: 10 m; geometric: 1).
        spacing_m: ground distance between two sub-patch centres, in metres (position code unit).
        upsample: factor by which the sub-patch map is repeated (nearest) before grouping;
            > 1 only when the patch is smaller than a coarse sensor's sub-patch (e.g. 10 m
            patches over 30 m Landsat 7), which the official code does not support.
    """

    g: int
    cell: int
    spacing_m: float
    upsample: int = 1


ORDERS = ("official", "geometric")


def subpatch_layout(sensor: Sensor, patch_m: int, order: str = "official") -> SubPatchLayout:
    """Layout of ``sensor`` for patches of ``patch_m`` metres; raises :class:`~anysat_lite.errors.UserError` (a
    ``ValueError``) when incompatible."""
    if order not in ORDERS:
        raise UserError(f"sub-patch order must be one of {ORDERS}, got {order!r}")
    s = sensor.subpatch_m
    g = ratio(patch_m, s)
    upsample = 1
    if g is None:
        up = ratio(s, 10.0)
        if up is None or ratio(patch_m, 10.0) is None:
            raise UserError(
                f"{sensor.name}: patch size {patch_m} m is not a multiple of its {s:g} m sub-patch "
                f"({sensor.subpatch_px} px x {sensor.gsd:g} m); use a multiple of {s:g} m"
            )
        # The patch is finer than the sensor's sub-patch: work on a 10 m grid of repeated values.
        upsample, s, g = up, 10.0, ratio(patch_m, 10.0)
    cell = ratio(10.0, s) if (s < 10.0 and order == "official") else 1
    if cell is None or g % cell:
        cell = 1
    return SubPatchLayout(g=g, cell=cell, spacing_m=s, upsample=upsample)


def group_subpatches(fmap: Tensor, layout: SubPatchLayout) -> Tensor:
    """``[B, Hs, Ws, D]`` sub-patch map -> ``[B, h, w, g*g, D]`` patches of sub-patch sequences."""
    if layout.upsample > 1:
        fmap = repeat(fmap, "b h w d -> b (h u) (w v) d", u=layout.upsample, v=layout.upsample)
    # A patch is n x n cells of c x c sub-patches (g = n * c): cells row-major, then sub-patches row-major.
    n, c = layout.g // layout.cell, layout.cell
    return rearrange(fmap, "b (h ni ci) (w nj cj) d -> b h w (ni nj ci cj) d", ni=n, nj=n, ci=c, cj=c)


def ungroup_subpatches(seq: Tensor, layout: SubPatchLayout) -> Tensor:
    """Place sub-patch ``k`` of each patch at ``(k // g, k % g)``: ``[B, h, w, g*g, D] -> [B, h*g, w*g, D]``.

    This is where the position codes say the tokens are; it inverts :func:`group_subpatches`
    exactly in geometric order (see the module docstring for the official order).
    """
    return rearrange(seq, "b h w (i j) d -> b (h i) (w j) d", i=layout.g, j=layout.g)
