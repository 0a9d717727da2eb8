"""Figures of the notebooks (the notebooks call these; the logic lives here).

Conventions every figure follows:

* **Ground axes in metres.**  Images are drawn with ``extent`` in metres (``x (m)``, ``y (m)``), so
  the panels of sensors with different GSDs line up and patch grids are drawn where they are.
* **One colour scheme for patch roles**: :data:`PATCH_COLOURS` (context blue, targets warm,
  unused light grey), used by every mask figure of every notebook.
* **True or false colour, said aloud.**  :func:`composite` picks the bands of a 3-band picture by
  their names in the sensor registry; every title says "true colour (R, G, B)" or "false colour
  (NIR, R, G)".  TreeSatAI's aerial tiles store NIR, G, B, R (colour infrared): band 1 is NIR.
* A colourbar or legend wherever colour carries meaning; :func:`use_style` (called by
  ``anysat_lite.notebooks.setup``) turns on constrained layout so titles and legends do not overlap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from .errors import UserError
from .sensors import SENSORS, check_sensor_names, get_sensor

__all__ = [
    "PATCH_COLOURS",
    "TARGET_COLOURS",
    "use_style",
    "composite",
    "rgb",
    "show_sample",
    "draw_patch_grid",
    "token_table",
    "plot_token_counts",
    "plot_patch_anatomy",
    "plot_subpatch_order",
    "plot_masks",
    "plot_modality_mask",
    "plot_date_drop",
    "plot_ema_schedule",
    "plot_segmentation",
    "plot_pipeline",
    "plot_date_attention",
    "plot_relative_positions",
    "plot_modality_share",
    "pca_colours",
    "plot_feature_pca",
    "cosine_similarity_map",
    "plot_similarity",
    "plot_embeddings",
]

# --- colours and style ---------------------------------------------------------------------------------------------

PATCH_COLOURS: dict[str, str] = {"unused": "#e3e3e3", "context": "#2f6db5", "target": "#e4572e"}
"""The one colour scheme for patch roles in mask figures: context, target (block 1) and unused patches."""
TARGET_COLOURS: tuple[str, ...] = ("#e4572e", "#f39c12", "#b8336a", "#a0522d", "#ff8c61", "#c9a227")
"""Target blocks 1, 2, ... (warm shades; block 1 is ``PATCH_COLOURS["target"]``)."""
MASKED_COLOUR = "#3a3a3a"  # a modality token replaced by the mask token


def use_style() -> None:
    """Figure defaults of the notebooks: constrained layout (no overlapping titles), readable font sizes."""
    import matplotlib as mpl

    mpl.rcParams.update(
        {
            "figure.constrained_layout.use": True,
            "figure.dpi": 100,
            "savefig.dpi": 110,
            "axes.titlesize": 10,
            "axes.labelsize": 9,
            "xtick.labelsize": 8,
            "ytick.labelsize": 8,
            "legend.fontsize": 8,
            "figure.titlesize": 11,
            "image.interpolation": "nearest",
        }
    )


# --- colour composites --------------------------------------------------------------------------------------------

# Band names of the 3-band pictures of sensors whose bands are not called R, G, B, NIR.
_COMPOSITES: dict[str, dict[str, tuple[str, str, str]]] = {
    "s2": {"true": ("B4", "B3", "B2"), "false": ("B8", "B4", "B3")},
    "l8": {"true": ("B4", "B3", "B2"), "false": ("B5", "B4", "B3")},
    "l7": {"true": ("B3", "B2", "B1"), "false": ("B4", "B3", "B2")},
    "modis": {"true": ("B1", "B4", "B3"), "false": ("B2", "B1", "B4")},
    "s1": {"false": ("VV", "VH", "VV/VH")},
    "alos": {"false": ("HH", "HV", "HH/HV")},
}


def composite(sensor: str, kind: str = "true") -> tuple[list[int], str]:
    """Band indices and label of a picture of ``sensor``: ``kind`` ``"true"`` (R, G, B) or ``"false"``
    (colour infrared NIR, R, G; radar: its channels as R, G, B).  Falls back to the other kind, then to the
    first band in grey, and the label always says which it is."""
    s = get_sensor(sensor)
    if kind not in ("true", "false"):
        raise UserError(f"kind={kind!r}: expected 'true' (R, G, B) or 'false' (colour infrared); e.g. kind='false'")
    names = list(s.bands)
    table = dict(_COMPOSITES.get(sensor, {}))
    if all(b in names for b in ("R", "G", "B")):
        table.setdefault("true", ("R", "G", "B"))
    if all(b in names for b in ("NIR", "R", "G")):
        table.setdefault("false", ("NIR", "R", "G"))
    for k in (kind, "false" if kind == "true" else "true"):
        if k in table:
            bands = table[k]
            label = "true colour" if k == "true" else "false colour"
            return [names.index(b) for b in bands], f"{label} ({', '.join(bands)})"
    return [0, 0, 0], f"{names[0]} band (grey)"


def _stretch(img: np.ndarray) -> np.ndarray:
    lo, hi = np.nanpercentile(img, 2), np.nanpercentile(img, 98)
    return np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)


def rgb(x, sensor: str, date: int | None = None, kind: str = "true") -> np.ndarray:
    """``[C, H, W]`` (or ``[T, C, H, W]`` with ``date``, default the middle one) -> ``[H, W, 3]`` in [0, 1].

    Bands from :func:`composite` (``kind`` ``"true"`` or ``"false"``), one 2-98 % stretch for the three
    bands together (so the colour balance stays).  A batch is refused: pass one sample (``x["aerial"][0]``).
    """
    bands, _ = composite(sensor, kind)
    x = torch.as_tensor(x).detach().float().cpu()
    series = get_sensor(sensor).is_series
    if x.dim() != (4 if series else 3) and not (series and x.dim() == 3):
        expected = "[T, C, H, W] (one sample's dates), or [C, H, W]" if series else "[C, H, W] (one image)"
        batch = x.dim() == (5 if series else 4)
        fix = f"pass one sample of the batch, e.g. x[{sensor!r}][0]" if batch else "pass one sample's image"
        raise UserError(f"rgb(x, {sensor!r}): expected {expected}, got shape {list(x.shape)}; {fix}")
    if x.dim() == 4:
        T = x.shape[0]
        if date is None:
            date = T // 2
        elif not -T <= date < T:
            raise UserError(f"date={date}: the series has {T} dates, expected 0 to {T - 1} (-1: the last); choose one")
        x = x[date]
    return _stretch(x[bands].permute(1, 2, 0).numpy())


def _extent(h_px: int, w_px: int, gsd: float) -> tuple[float, float, float, float]:
    """imshow ``extent`` of an image of ``h_px x w_px`` pixels of ``gsd`` metres, origin top-left."""
    return (0.0, w_px * gsd, h_px * gsd, 0.0)


def draw_patch_grid(ax, extent_m, patch_m: float, pixel_m: float | None = None, color="yellow", lw=1.0):
    """Patch boundaries every ``patch_m`` metres.  ``pixel_m`` None: the axes are in metres (as
    :func:`show_sample` draws them); a number: the image is drawn in pixels of ``pixel_m`` metres."""
    H, W = (extent_m, extent_m) if np.isscalar(extent_m) else extent_m
    to_axis = (lambda v: v) if pixel_m is None else (lambda v: v / pixel_m - 0.5)
    for v in np.arange(0, W + 1e-6, patch_m):
        ax.axvline(to_axis(v), color=color, lw=lw)
    for v in np.arange(0, H + 1e-6, patch_m):
        ax.axhline(to_axis(v), color=color, lw=lw)


def _one_sample(sample: Mapping, s: str, b: int) -> torch.Tensor:
    """Sample ``b`` of the batched tensor ``sample[s]`` (``[B, C, H, W]`` or ``[B, T, C, H, W]``), as float."""
    x = torch.as_tensor(sample[s])
    sen = SENSORS[s]
    if x.dim() != sen.input_rank:
        raise UserError(
            f"{s} of shape {list(x.shape)}: expected a batch {sen.layout}; add the batch axis: x[{s!r}][None] "
            "(or draw one image with rgb)"
        )
    n = x.shape[0]
    if not -n <= b < n:
        raise UserError(f"b={b}: the batch holds {n} sample(s), expected 0 to {n - 1}; choose one of them")
    return x[b].float()


def show_sample(
    sample: dict,
    b: int = 0,
    sensors: Sequence[str] | None = None,
    patch_m: float | None = None,
    axes=None,
    date: int | None = None,
    kind: str = "true",
):
    """One tile, one panel per sensor at its own resolution, axes in metres (optional patch grid).

    Titles say the composite (true or false colour), the pixel grid and GSD, and for a time series
    which date is shown (day of year).
    """
    import matplotlib.pyplot as plt

    if sensors is not None:
        from .probe.features import select_sensors

        select_sensors(sample, sensors)  # a string, an unknown name, a sensor the sample lacks: one line each
    sensors = [s for s in (sensors or [k for k in sample if k in SENSORS]) if not SENSORS[s].one_token_per_tile]
    images = {s: _one_sample(sample, s, b) for s in sensors}  # refused before a figure is made
    if patch_m:
        from .data.contract import check_patch_size

        for s, x in images.items():  # a grid the encoder could not cut is not drawn
            check_patch_size(patch_m, (x.shape[-2] * SENSORS[s].gsd, x.shape[-1] * SENSORS[s].gsd))
    pictures = {s: rgb(x, s, date if SENSORS[s].is_series else None, kind) for s, x in images.items()}
    if axes is None:
        _, axes = plt.subplots(1, len(sensors), figsize=(3.3 * len(sensors), 3.6))
    axes = np.atleast_1d(axes)
    for i, (ax, s) in enumerate(zip(axes, sensors)):
        x, sen = images[s], SENSORS[s]
        ax.imshow(pictures[s], extent=_extent(x.shape[-2], x.shape[-1], sen.gsd))
        _, label = composite(s, kind)
        title = f"{s}: {label}\n{x.shape[-2]} x {x.shape[-1]} px at {sen.gsd:g} m"
        if sen.is_series:
            t = (date if date is not None else x.shape[0] // 2) % x.shape[0]
            dates = sample.get(f"{s}_dates")
            day = f", day {int(dates[b][t])}" if dates is not None else ""
            title += f", date {t + 1}/{x.shape[0]}{day}"
        ax.set_title(title)
        if patch_m:
            draw_patch_grid(ax, (x.shape[-2] * sen.gsd, x.shape[-1] * sen.gsd), patch_m)
        ax.set_xlabel("x (m)")
        if i == 0:
            ax.set_ylabel("y (m)")
    return axes


# --- tokenization -------------------------------------------------------------------------------------------------


def token_table(
    sensors: Sequence[str], patch_sizes: Sequence[int], tile_m: float, order: str = "geometric"
) -> list[dict]:
    """Sub-patches per patch and tokens per tile for each sensor and patch size.

    Refused, as the model refuses them: a patch size that does not divide the tile or that a sensor cannot cut
    into sub-patches, an unknown sensor, and a string instead of a list of sensors.
    """
    from .data.contract import check_patch_size
    from .model.tokenizer import subpatch_layout

    check_sensor_names(sensors)
    rows = []
    for P in patch_sizes:
        h, w = check_patch_size(P, (tile_m, tile_m))
        n_patches = h * w
        for s in sensors:
            sen = get_sensor(s)
            if sen.one_token_per_tile:
                rows.append(
                    {
                        "patch_m": P,
                        "sensor": s,
                        "subpatch_m": sen.subpatch_m,
                        "g": 1,
                        "patches": 1,
                        "subpatch_tokens": 1,
                    }
                )
                continue
            lay = subpatch_layout(sen, P, order)
            rows.append(
                {
                    "patch_m": P,
                    "sensor": s,
                    "subpatch_m": lay.spacing_m,
                    "g": lay.g,
                    "patches": n_patches,
                    "subpatch_tokens": n_patches * lay.g**2,
                }
            )
    return rows


def plot_token_counts(sensors: Sequence[str], patch_sizes: Sequence[int], tile_m: float, ax=None):
    """Log scale, against the patch size: the length ``g * g`` of each sensor's sub-patch sequences (what one
    sub-patch transformer call attends over) and the joint transformer's tokens per tile."""
    import matplotlib.pyplot as plt

    rows = token_table(sensors, patch_sizes, tile_m)
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 4))
    for s in sensors:
        r = [x for x in rows if x["sensor"] == s]
        ax.plot([x["patch_m"] for x in r], [x["g"] ** 2 for x in r], "o-", label=f"{s}: sub-patches per patch, g²")
    spatial = [s for s in sensors if not SENSORS[s].one_token_per_tile]
    ax.plot(
        patch_sizes,
        [1 + len(spatial) * int(tile_m // P) ** 2 for P in patch_sizes],
        "k--",
        label=f"joint transformer tokens per {tile_m:g} m tile (1 + sensors x patches)",
    )
    ax.set_xlabel("patch size P (m)")
    ax.set_ylabel("sequence length (tokens)")
    ax.set_yscale("log")
    ax.set_title("Small patches: many joint tokens; large patches: long sub-patch sequences")
    ax.legend()
    return ax


def plot_patch_anatomy(
    sample: dict,
    patch_m: float,
    sensors: Sequence[str],
    patch: tuple[int, int] = (0, 0),
    b: int = 0,
    axes=None,
    date: int | None = None,
):
    """One patch of ``patch_m`` metres as each sensor sees it, with its sub-patch grid (axes in metres)."""
    import matplotlib.pyplot as plt

    from .data.contract import check_patch_size, patch_size_m
    from .model.tokenizer import subpatch_layout
    from .probe.features import select_sensors

    select_sensors(sample, sensors)  # a string, an unknown name, a sensor the sample lacks: one line each
    for s in sensors:
        subpatch_layout(SENSORS[s], patch_m, "geometric")  # a patch size the sensor cannot cut
    patch_m = patch_size_m(patch_m)
    for s in sensors:
        x = _one_sample(sample, s, b)
        h, w = check_patch_size(patch_m, (x.shape[-2] * SENSORS[s].gsd, x.shape[-1] * SENSORS[s].gsd))
        if not (isinstance(patch, (tuple, list)) and len(patch) == 2 and 0 <= patch[0] < h and 0 <= patch[1] < w):
            raise UserError(
                f"patch={patch!r}: expected (row, column) of the {h} x {w} grid of {patch_m} m patches "
                f"(rows 0..{h - 1}, columns 0..{w - 1}); e.g. patch=(0, 0)"
            )
    if axes is None:
        fig, axes = plt.subplots(1, len(sensors), figsize=(3.3 * len(sensors), 4.3))
        fig.suptitle(f"Patch {tuple(patch)} of the {patch_m:g} m grid, cut into each sensor's sub-patches")
    r0, c0 = patch[0] * patch_m, patch[1] * patch_m
    for ax, s in zip(np.atleast_1d(axes), sensors):
        sen = SENSORS[s]
        lay = subpatch_layout(sen, patch_m, "geometric")
        x = _one_sample(sample, s, b)
        t = (date if date is not None else x.shape[0] // 2) if sen.is_series else None
        img = rgb(x, s, t)
        ax.imshow(img, extent=_extent(img.shape[0], img.shape[1], sen.gsd))
        ax.set_xlim(c0, c0 + patch_m)
        ax.set_ylim(r0 + patch_m, r0)
        sub = lay.spacing_m
        for v in np.arange(0, patch_m + 1e-6, sub):
            ax.axvline(c0 + v, color="white", lw=0.6)
            ax.axhline(r0 + v, color="white", lw=0.6)
        note = f" (each {sen.subpatch_m:g} m pixel repeated)" if lay.upsample > 1 else ""
        ax.set_title(f"{s}: {lay.g} x {lay.g} sub-patches of {sub:g} m{note}\n({sen.subpatch_px} px x {sen.gsd:g} m)")
        ax.set_xlabel("x (m)")
    np.atleast_1d(axes)[0].set_ylabel("y (m)")
    return axes


def plot_subpatch_order(sensor: str, patch_m: int, axes=None):
    """Which sub-patch of a patch is the k-th token, in ``geometric`` and ``official`` order (colour = k)."""
    import matplotlib.pyplot as plt

    from .model.tokenizer import group_subpatches, subpatch_layout

    lay0 = subpatch_layout(get_sensor(sensor), patch_m, "geometric")  # refused before a figure is made
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(8, 3.8))
    g = lay0.g
    ground = torch.arange(g * g).float().view(1, g, g, 1)  # value = row-major ground index
    for ax, order in zip(np.atleast_1d(axes), ("geometric", "official")):
        lay = subpatch_layout(SENSORS[sensor], patch_m, order)
        seq = group_subpatches(ground, lay)[0, 0, 0, :, 0].long()  # the ground cell of the k-th token
        k_at = torch.empty(g * g)
        k_at[seq] = torch.arange(g * g).float()
        im = ax.imshow(k_at.view(g, g).numpy(), cmap="viridis", extent=(0, patch_m, patch_m, 0))
        ax.set_title(f"{order} order ({g} x {g} sub-patches of {lay.spacing_m:g} m)")
        ax.set_xlabel("x (m)")
        ax.set_ylabel("y (m)")
    plt.colorbar(im, ax=axes, label="position k in the token sequence", shrink=0.85)
    return axes


# --- masks (notebooks 02-04) ----------------------------------------------------------------------------------------


def _mask_cmap():
    from matplotlib.colors import ListedColormap

    return ListedColormap([PATCH_COLOURS["unused"], PATCH_COLOURS["context"], *TARGET_COLOURS])


def plot_masks(masks_by_name: dict, sample: int = 0, axes=None):
    """One panel per mask strategy, in :data:`PATCH_COLOURS`: context, target blocks (warm shades), unused."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from .jepa.masks import masks_to_grid

    if axes is None:
        fig, axes = plt.subplots(1, len(masks_by_name), figsize=(3.2 * len(masks_by_name) + 1.6, 3.4))
    axes = np.atleast_1d(axes)
    n_targets = 1
    for ax, (name, m) in zip(axes, masks_by_name.items()):
        grid = masks_to_grid(m, sample).numpy()
        ax.imshow(grid, cmap=_mask_cmap(), vmin=0, vmax=1 + len(TARGET_COLOURS), interpolation="nearest")
        n_targets = max(n_targets, len(m.targets))
        ax.set_title(
            f"{name}\ncontext {m.context.shape[1]} patch{'es' * (m.context.shape[1] != 1)}, "
            f"{len(m.targets)} target block(s) of {m.targets[0].shape[1]}"
        )
        ax.set_xlabel("patch column")
        ax.set_ylabel("patch row")
    handles = [
        Patch(color=PATCH_COLOURS["context"], label="context"),
        *[
            Patch(color=TARGET_COLOURS[i % len(TARGET_COLOURS)], label=f"target block {i + 1}")
            for i in range(n_targets)
        ],
        Patch(color=PATCH_COLOURS["unused"], label="unused"),
    ]
    axes[-1].legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    return axes


def plot_modality_mask(masked: torch.Tensor, sensors: Sequence[str], grid, sample: int = 0, axes=None):
    """``masked [B, M, K]`` over a full grid -> one panel per modality: kept tokens in the context colour,
    tokens replaced by the mask token in dark grey."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    if axes is None:
        _, axes = plt.subplots(1, len(sensors), figsize=(2.7 * len(sensors) + 1.6, 2.9))
    axes = np.atleast_1d(axes)
    cmap = ListedColormap([MASKED_COLOUR, PATCH_COLOURS["context"]])
    for m, (ax, s) in enumerate(zip(axes, sensors)):
        kept = ~masked[sample, m]
        ax.imshow(kept.view(*grid).numpy(), cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(f"{s}: {kept.sum().item()}/{masked.shape[-1]} kept")
        ax.set_xlabel("patch column")
    axes[0].set_ylabel("patch row")
    axes[-1].legend(
        handles=[Patch(color=PATCH_COLOURS["context"], label="kept"), Patch(color=MASKED_COLOUR, label="mask token")],
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
        frameon=False,
    )
    return axes


def plot_date_drop(dates_before: torch.Tensor, dates_after: torch.Tensor, ax=None, label: str = ""):
    """Dates of one series before/after dropping, on a day-of-year axis."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 1.9))
    ax.eventplot(
        [np.asarray(dates_before), np.asarray(dates_after)],
        lineoffsets=[1, 0],
        colors=["#8c8c8c", PATCH_COLOURS["target"]],
    )
    ax.set_yticks([0, 1])
    ax.set_yticklabels([f"context encoder ({len(dates_after)} dates)", f"target encoder ({len(dates_before)} dates)"])
    ax.set_xlim(0, 367)
    ax.set_xlabel(f"day of year {label}".strip())
    ax.set_title("Date dropping: the context encoder sees a random subset of each series")
    return ax


def plot_ema_schedule(total_steps: int, start: float = 0.996, end: float = 1.0, ax=None):
    """The EMA momentum ``m`` of each training step (linear from ``start`` to ``end``)."""
    import matplotlib.pyplot as plt

    from .jepa.ema import momentum_at

    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3))
    steps = np.arange(total_steps + 1)
    ax.plot(steps, [momentum_at(int(s), total_steps, start, end) for s in steps])
    ax.set_xlabel("training step")
    ax.set_ylabel("EMA momentum m")
    ax.set_title("target <- m * target + (1 - m) * online")
    return ax


def plot_segmentation(
    image: np.ndarray,
    truth: torch.Tensor,
    pred: torch.Tensor,
    classes: Sequence[str],
    axes=None,
    pixel_m: float | None = None,
):
    """Image, labels and a dense prediction side by side, one colour per class (colourbar with the names).

    ``pixel_m``: ground size of a label cell, to draw the axes in metres (default: pixel indices).
    """
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(11, 3.9), layout="constrained")
    H, W = truth.shape[-2:]
    ext = _extent(H, W, pixel_m) if pixel_m else None
    axes[0].imshow(image, extent=ext)
    axes[0].set_title("image")
    cmap = plt.get_cmap("tab10", len(classes))
    for ax, lab, t in ((axes[1], truth, "labels"), (axes[2], pred, "dense probe")):
        im = ax.imshow(
            np.asarray(lab), cmap=cmap, vmin=-0.5, vmax=len(classes) - 0.5, interpolation="nearest", extent=ext
        )
        ax.set_title(t)
    for ax in axes:
        ax.set_xlabel("x (m)" if pixel_m else "x (pixel)")
    axes[0].set_ylabel("y (m)" if pixel_m else "y (pixel)")
    cb = plt.colorbar(im, ax=axes, ticks=range(len(classes)), fraction=0.03)
    cb.ax.set_yticklabels(classes)
    cb.set_label("class")
    return axes


# --- inside the model (notebooks 00, 01) ----------------------------------------------------------------------------


def _shape(s) -> str:
    return "[" + ", ".join(str(int(v)) for v in s) + "]"


def plot_pipeline(trace, ax=None):
    """The whole encoder as one figure, with the tensor shape at every arrow, from a
    :class:`~anysat_lite.model.trace.PipelineTrace` (a real forward pass)."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    sensors = [s for s in trace.sensors if s in trace.grouped]
    M = len(sensors)
    rows = max(M, 4)
    if ax is None:
        _, ax = plt.subplots(figsize=(15, 1.15 * rows + 1.2))
    height = rows * 10.0
    ax.set_xlim(0, 152)
    ax.set_ylim(-1, height + 1)
    ax.axis("off")

    def box(x, y, w, h, text, colour):
        ax.add_patch(FancyBboxPatch((x, y - h / 2), w, h, boxstyle="round,pad=0.4", fc=colour, ec="#333", lw=0.8))
        ax.text(x + w / 2, y, text, ha="center", va="center", fontsize=8)

    def arrow(x0, y0, x1, y1, label="", above=True):
        ax.annotate("", xy=(x1, y1), xytext=(x0, y0), arrowprops=dict(arrowstyle="->", color="#444", lw=0.9))
        if label:
            ax.text(
                (x0 + x1) / 2,
                (y0 + y1) / 2 + (1.2 if above else -1.2),
                label,
                ha="center",
                va="bottom" if above else "top",
                fontsize=7,
                color="#1a1a1a",
            )

    ys = [height - 5 - i * (height - 10) / max(M - 1, 1) for i in range(M)] if M > 1 else [height / 2]
    mid = height / 2
    h, w = trace.grid
    D = trace.fused.shape[-1]
    for s, y in zip(sensors, ys):
        box(1, y, 13, 5.5, f"{s}\n{'time series' if trace.kinds[s] == 'series' else 'image'}", "#f4f1de")
        arrow(15.5, y, 30, y, _shape(trace.inputs[s]))
        proj = "L-TAE\n(per pixel, over dates)" if trace.kinds[s] == "series" else "conv + MLP\n(per sub-patch)"
        box(30.5, y, 14, 5.5, f"projector\n{proj}", "#e0ecf8")
        arrow(46, y, 62, y, f"{_shape(trace.projected[s].shape)} map")
        ax.text(
            54,
            y - 1.2,
            f"cut into {h}x{w} patches:\n{_shape(trace.grouped[s])}",
            ha="center",
            va="top",
            fontsize=7,
            color="#1a1a1a",
        )
        arrow(80, y, 92, mid + (y - mid) * 0.35, f"{_shape((trace.fused.shape[0], h * w, D))}")
    box(
        62.5,
        mid,
        16.5,
        height - 4,
        "sub-patch\ntransformer\n(shared by all\nsensors, iRPE)\n\none token per\npatch and sensor",
        "#e8e0f4",
    )
    box(92.5, mid, 13, 9, "+ patch positions\n(x P/10)\njoint transformer", "#e8e0f4")
    arrow(107, mid, 116, mid, _shape(trace.joint.shape))
    box(116.5, mid, 9.5, 7, "fusion\n(cross-\nattention)", "#e8e0f4")
    ax.text(99, mid - 6.5, f"in: {_shape(trace.patch_tokens.shape)}", ha="center", va="top", fontsize=7)
    outs = [
        ("tile", "the cls token"),
        ("patch", f"{h} x {w} patches"),
        ("all", "cls + patches"),
        ("dense", f"{trace.dense_sensor} sub-patches\n+ patch token"),
    ]
    oy = [mid + 1.5 * 9 - i * 9 for i in range(4)]
    ax.text(121, mid + 5, _shape(trace.fused.shape), ha="center", va="bottom", fontsize=7)
    # 'dense' also reads the sub-patch transformer: each sub-patch token beside its patch's fused token
    arrow(79.5, oy[3] - 2.5, 134, oy[3] - 2.5, f"{trace.dense_sensor} sub-patch tokens", above=False)
    for (mode, what), y in zip(outs, oy):
        arrow(127.5, mid, 134, y)
        shape = trace.outputs.get(mode)
        box(134.5, y, 16, 7.5, f"'{mode}'\n{what}\n{_shape(shape) if shape else ''}", "#dff2e1")
    ax.set_title(
        f"AnySat, one forward pass with P = {trace.patch_size} m (batch B = {trace.fused.shape[0]}, "
        f"width D = {D}, patch grid {h} x {w})"
    )
    return ax


def plot_date_attention(weights: torch.Tensor, dates: torch.Tensor, ax=None, title: str = "", valid=None):
    """L-TAE attention ``[heads, T]`` of one pixel (or averaged over pixels) against the dates (day of year).

    ``valid [T]``: dates flagged invalid are marked with a cross on the day axis.
    """
    import matplotlib.pyplot as plt

    w = torch.as_tensor(weights).detach().float().cpu().numpy()
    d = np.asarray(torch.as_tensor(dates).cpu())
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 3.4))
    im = ax.imshow(
        w, aspect="auto", cmap="magma", interpolation="nearest", extent=(-0.5, len(d) - 0.5, w.shape[0] - 0.5, -0.5)
    )
    step = max(1, len(d) // 16)
    ax.set_xticks(range(0, len(d), step))
    ax.set_xticklabels([str(int(v)) for v in d[::step]], rotation=90)
    ax.set_xlabel("date (day of year)")
    ax.set_ylabel("L-TAE head (master query)")
    if valid is not None:
        bad = np.flatnonzero(~np.asarray(valid, dtype=bool))
        ax.plot(
            bad, np.full(len(bad), w.shape[0] - 0.5), "x", color="#1f9e89", ms=8, clip_on=False, label="masked date"
        )
        if len(bad):
            ax.legend(loc="upper right")
    ax.set_title(title or "Attention of each head over the dates (each row sums to 1)")
    plt.colorbar(im, ax=ax, label="attention weight")
    return ax


def plot_relative_positions(
    buckets: torch.Tensor, bias: torch.Tensor | None, g: int, query: tuple[int, int], spacing_m: float, axes=None
):
    """iRPE seen from one sub-patch: the bucket of every other sub-patch of a ``g x g`` patch (its distance
    class), and the bias the query adds to their attention scores.

    ``buckets [1 + g*g, 1 + g*g]`` and ``bias [1 + g*g, 1 + g*g]`` include the cls token first.
    """
    import matplotlib.pyplot as plt

    i = 1 + query[0] * g + query[1]
    n = 2 if bias is not None else 1
    if axes is None:
        _, axes = plt.subplots(1, n, figsize=(4.4 * n, 3.8))
    axes = np.atleast_1d(axes)
    ext = (0, g * spacing_m, g * spacing_m, 0)
    b = buckets[i, 1:].view(g, g).cpu().numpy()
    vals = np.unique(b)
    cmap = plt.get_cmap("viridis", len(vals))
    im = axes[0].imshow(np.searchsorted(vals, b), cmap=cmap, vmin=-0.5, vmax=len(vals) - 0.5, extent=ext)
    cb = plt.colorbar(im, ax=axes[0], ticks=range(len(vals)), shrink=0.85)
    cb.ax.set_yticklabels([str(int(v)) for v in vals])
    cb.set_label("bucket id")
    axes[0].set_title(f"buckets seen from sub-patch {query}\n(cls token: bucket {int(buckets[i, 0])})")
    if bias is not None:
        im = axes[1].imshow(bias[i, 1:].view(g, g).detach().cpu().numpy(), cmap="coolwarm", extent=ext)
        plt.colorbar(im, ax=axes[1], shrink=0.85, label="bias added to the score")
        axes[1].set_title(f"iRPE bias of sub-patch {query}\n(from the first head's query)")
    for ax in axes:
        y, x = (query[0] + 0.5) * spacing_m, (query[1] + 0.5) * spacing_m
        ax.plot(x, y, "*", color="white", ms=12, mec="black")
        ax.set_xlabel("x (m)")
        ax.set_ylabel("y (m)")
    return axes


def plot_modality_share(trace, axes=None, sample: int = 0):
    """Per patch, the share of the fusion attention (mean over heads) that goes to each sensor's tokens."""
    import matplotlib.pyplot as plt

    from .model.trace import fusion_shares

    sensors = [s for s in trace.sensors if s in trace.grouped]
    M, (h, w) = len(sensors), trace.grid
    N = h * w
    share = fusion_shares(trace)[sample, -N:].sum(-1)  # [N, M]
    if axes is None:
        _, axes = plt.subplots(1, M, figsize=(3.0 * M + 1.0, 3.0))
    axes = np.atleast_1d(axes)
    P = trace.patch_size
    for m, (ax, s) in enumerate(zip(axes, sensors)):
        im = ax.imshow(share[:, m].view(h, w).numpy(), cmap="viridis", vmin=0, vmax=1, extent=(0, w * P, h * P, 0))
        ax.set_title(f"{s}: mean share {share[:, m].mean():.2f}")
        ax.set_xlabel("x (m)")
    axes[0].set_ylabel("y (m)")
    plt.colorbar(im, ax=axes, label="share of the fused token's attention", shrink=0.85)
    return axes


# --- features (notebooks 06, 07) ------------------------------------------------------------------------------------


def pca_colours(maps: Mapping[str, torch.Tensor], n: int = 3, joint: bool = True) -> dict[str, np.ndarray]:
    """Feature maps ``{name: [H, W, D]}`` -> ``{name: [H, W, 3]}`` in [0, 1]: their first three principal
    components, each stretched 2-98 %.  ``joint``: one PCA fitted on all maps together (the same colour means
    the same direction in feature space in every panel); otherwise one PCA per map (shows the structure
    inside each map, colours not comparable).  NaN features (skipped tiles) stay NaN."""
    if not joint:
        return {k: pca_colours({k: v}, n)[k] for k, v in maps.items()}
    flat = {k: torch.as_tensor(v).detach().float().cpu().reshape(-1, v.shape[-1]) for k, v in maps.items()}
    allf = torch.cat([f[~f.isnan().any(1)] for f in flat.values()])
    mean = allf.mean(0)
    _, _, V = torch.linalg.svd(allf - mean, full_matrices=False)
    comps = V[:n].T  # [D, 3]
    proj = {k: ((f - mean) @ comps).numpy() for k, f in flat.items()}
    both = np.concatenate([p[~np.isnan(p).any(1)] for p in proj.values()])
    lo, hi = np.percentile(both, 2, axis=0), np.percentile(both, 98, axis=0)
    out = {}
    for k, p in proj.items():
        H, W = maps[k].shape[:2]
        out[k] = np.clip((p - lo) / np.maximum(hi - lo, 1e-6), 0, 1).reshape(H, W, n)
    return out


def plot_feature_pca(
    maps: Mapping[str, torch.Tensor],
    extent_m: float | tuple[float, float],
    axes=None,
    title: str = "",
    joint: bool = True,
):
    """Each feature map ``[H, W, D]`` as a PCA colour picture (:func:`pca_colours`), axes in metres."""
    import matplotlib.pyplot as plt

    H_m, W_m = (extent_m, extent_m) if np.isscalar(extent_m) else extent_m
    cols = pca_colours(maps, joint=joint)
    if axes is None:
        fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 4.3))
        fig.suptitle(
            title
            or (
                "Features as colours: principal components 1-3 -> R, G, B "
                + ("(one PCA for all panels)" if joint else "(one PCA per panel)")
            )
        )
    axes = np.atleast_1d(axes)
    for i, (ax, (name, img)) in enumerate(zip(axes, cols.items())):
        ax.imshow(img, extent=(0, W_m, H_m, 0))
        ax.set_title(f"{name}\n{img.shape[0]} x {img.shape[1]} features")
        ax.set_xlabel("x (m)")
        if i == 0:
            ax.set_ylabel("y (m)")
    return axes


def cosine_similarity_map(features: torch.Tensor, query: tuple[int, int], center: bool = False) -> torch.Tensor:
    """``features [H, W, D]`` -> ``[H, W]`` cosine similarity of every position to the one at ``query`` (row, col).

    ``center``: subtract the mean feature of the map first.  Embeddings share a large common component
    (the same learned queries and biases everywhere), which pushes every raw cosine towards 1; centring
    compares what is specific to each position.  NaN features (skipped tiles) are left out of the mean.

    An xarray DataArray with a ``feature`` dimension (``ds.embedding``, ``[feature, y, x]``) is read by its
    dims.  Refused: a tensor that is not 3-D, one that looks feature-first (``[D, H, H]`` with ``D > H``: move
    the features last, or pass the DataArray), and a query outside the map.
    """
    f = _feature_map(features)
    H, W = f.shape[:2]
    ok = isinstance(query, Sequence) and len(query) == 2 and all(isinstance(i, (int, np.integer)) for i in query)
    if not ok or not (0 <= query[0] < H and 0 <= query[1] < W):
        raise UserError(
            f"query {query!r}: expected (row, col) of a position of the {H} x {W} map, 0 <= row < {H} and "
            f"0 <= col < {W}; pick a position inside the map"
        )
    if center:
        flat = f.reshape(-1, f.shape[-1])
        f = f - flat[~flat.isnan().any(1)].mean(0)
    q = f[query[0], query[1]]
    return torch.nn.functional.cosine_similarity(f, q.expand_as(f), dim=-1)


def _feature_map(features) -> torch.Tensor:
    """``[H, W, D]`` float features from a tensor, an array or a DataArray (by its ``feature`` dim)."""
    if hasattr(features, "dims") and "feature" in features.dims:  # xarray, e.g. ds.embedding [feature, y, x]
        features = features.transpose(*[d for d in features.dims if d != "feature"], "feature").values
    f = torch.as_tensor(np.asarray(features) if not torch.is_tensor(features) else features).detach().float()
    if f.dim() != 3:
        fix = "take one sample of a batch: features[0]" if f.dim() == 4 else "give one map of features"
        raise UserError(f"features: expected a map [H, W, D], got shape {list(f.shape)}; {fix}")
    if f.shape[1] == f.shape[2] and f.shape[0] > f.shape[2]:
        raise UserError(
            f"features: expected a map [H, W, D] (features last), got shape {list(f.shape)}, which looks like "
            "[D, H, W] (the order of ds.embedding); move the features last: features.permute(1, 2, 0), or pass "
            "the DataArray ds.embedding itself"
        )
    return f


def plot_similarity(
    sim: torch.Tensor,
    extent: tuple[float, float, float, float],
    query_xy: tuple[float, float],
    ax=None,
    title: str = "",
    xlabel: str = "x (m)",
    ylabel: str = "y (m)",
):
    """A similarity map ``[H, W]`` over ``extent`` (imshow order: left, right, bottom, top) with the query marked."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(4.6, 4))
    im = ax.imshow(np.asarray(torch.as_tensor(sim).float()), cmap="viridis", extent=extent, vmin=-1, vmax=1)
    ax.plot(*query_xy, "*", color="white", ms=14, mec="black", label="query patch")
    ax.legend(loc="lower right")
    plt.colorbar(im, ax=ax, label="cosine similarity to the query", shrink=0.85)
    ax.set_title(title or "Nearest neighbours of the query patch")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return ax


def plot_embeddings(
    ds, query: tuple[int, int] | None = None, axes=None, image: np.ndarray | None = None, center: bool = True
):
    """An embedding dataset of :func:`anysat_lite.probe.embed.embed_rasters` on the map (its CRS, metres):
    [``image``, an RGB picture of the same extent,] the patch embeddings as PCA colours, and the cosine
    similarity of every patch to the ``query`` patch (row, col; default the centre), centred by default
    (:func:`cosine_similarity_map`).  Dashed lines: the tiles the area was encoded in."""
    import matplotlib.pyplot as plt

    emb = torch.as_tensor(np.asarray(ds["embedding"].transpose("y", "x", "feature").values))
    P = float(ds.attrs["patch_size_m"])
    xs, ys = np.asarray(ds["x"]), np.asarray(ds["y"])
    left, top = xs[0] - P / 2, ys[0] + P / 2
    extent = (left, xs[-1] + P / 2, ys[-1] - P / 2, top)
    query = query or (emb.shape[0] // 2, emb.shape[1] // 2)
    n = 3 if image is not None else 2
    if axes is None:
        _, axes = plt.subplots(1, n, figsize=(5.0 * n, 4.8))
    axes = list(np.atleast_1d(axes))
    if image is not None:
        ax = axes.pop(0)
        ax.imshow(image, extent=extent)
        ax.set_title("the area (aerial, true colour)")
        axes.insert(0, ax)
    k = n - 2
    colours = pca_colours({"embedding": emb})["embedding"]
    axes[k].imshow(colours, extent=extent)
    axes[k].set_title(f"{emb.shape[0]} x {emb.shape[1]} patch embeddings of {P:g} m, PCA 1-3 -> RGB")
    sim = cosine_similarity_map(emb, query, center=center)
    plot_similarity(
        sim,
        extent,
        (xs[query[1]], ys[query[0]]),
        ax=axes[k + 1],
        xlabel="easting (m)",
        ylabel="northing (m)",
        title=f"{'centred ' if center else ''}cosine similarity to patch {tuple(query)}",
    )
    tile = float(ds.attrs.get("tile_size_m", 0) or 0)
    for ax in axes:
        if tile:
            for v in np.arange(left + tile, extent[1] - 1e-6, tile):
                ax.axvline(v, color="white", lw=1, ls="--")
            for v in np.arange(top - tile, extent[2] + 1e-6, -tile):
                ax.axhline(v, color="white", lw=1, ls="--")
        ax.ticklabel_format(useOffset=False, style="plain")
        ax.tick_params(axis="x", labelrotation=30)
        ax.set_xlabel("easting (m)")
        ax.set_ylabel("northing (m)")
    return axes


# --- notebooks 02-05: mask statistics, pretraining runs, schedules, contrastive pairs ------------------------------


def plot_context_statistics(stats: dict, axes=None):
    """Context size per grid for several mask settings, from :func:`anysat_lite.jepa.context_statistics`.

    ``stats``: ``{setting name: [statistics dict per grid]}``.  Left: the mean share of the grid the
    context encoder sees (%); right: the share of steps whose context is a single patch and (hatched)
    the share with at least four patches (%).
    """
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    names = list(stats)
    grids = [r["grid"] for r in stats[names[0]]]
    x = np.arange(len(grids))
    width = 0.8 / len(names)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for j, name in enumerate(names):
        rows = {r["grid"]: r for r in stats[name]}
        c = colours[j % len(colours)]
        share = [100 * rows[g]["mean_share"] for g in grids]
        axes[0].bar(x + j * width, share, width, color=c, label=name)
        for xi, v in zip(x + j * width, share):
            axes[0].text(xi, v + 1, f"{v:.0f}", ha="center", fontsize=7)
        axes[1].bar(
            x + j * width - width / 4,
            [100 * rows[g]["p_one"] for g in grids],
            width / 2,
            color=c,
            label=f"{name}: exactly 1 patch",
        )
        axes[1].bar(
            x + j * width + width / 4,
            [100 * rows[g]["p_at_least_4"] for g in grids],
            width / 2,
            color=c,
            hatch="//",
            edgecolor="white",
            label=f"{name}: at least 4 patches",
        )
    for ax in axes:
        ax.set_xticks(x + width * (len(names) - 1) / 2)
        ax.set_xticklabels(grids)
        ax.set_xlabel("patch grid of the tile (rows x columns of patches)")
        ax.set_ylim(0, 110)
    axes[0].set_ylabel("mean context share of the grid (%)")
    axes[0].set_title("How much of the tile the context encoder sees")
    axes[1].set_ylabel("share of steps (%)")
    axes[1].set_title("Steps whose context is one patch / at least 4 patches")
    axes[0].legend(fontsize=8, loc="upper right")
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return axes


_MONITOR_LABELS = {
    "jepa_loss": ("JEPA loss (smooth-L1)", "loss (target units)"),
    "contrastive_loss": ("MIL-NCE loss", "loss (nats per anchor)"),
    "std": ("target std per dimension", "std (layer-normed units)"),
    "erank": ("effective rank of the targets (RankMe)", "effective rank (dimensions)"),
    "cos": ("mean cosine between tile embeddings", "cosine similarity"),
    "place_cos": ("mean cosine between two places' targets in a tile", "cosine similarity"),
}


def plot_monitor_runs(
    runs: dict, keys: Sequence[str] = ("jepa_loss", "std", "erank", "cos"), thresholds: dict | None = None, axes=None
):
    """Compare pretraining runs: one panel per logged quantity against the step.

    ``runs``: ``{run name: rows of anysat_lite.train.metrics.read_metrics}``; ``thresholds``:
    ``{key: value}`` drawn as dashed lines (the collapse warnings of ``JEPAConfig.warn_*``).
    """
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, len(keys), figsize=(3.9 * len(keys), 3.7), layout="constrained")
    axes = np.atleast_1d(axes)
    for ax, key in zip(axes, keys):
        for name, rows in runs.items():
            sel = [r for r in rows if r.get(key) not in (None, "")]
            ax.plot([r["step"] for r in sel], [float(r[key]) for r in sel], label=name)
        if thresholds and key in thresholds:
            ax.axhline(thresholds[key], color="black", ls="--", lw=1)
            ax.annotate(
                f"warning at {thresholds[key]:g}",
                xy=(0.98, thresholds[key]),
                xycoords=("axes fraction", "data"),
                ha="right",
                va="bottom",
                fontsize=7,
            )
        title, ylabel = _MONITOR_LABELS.get(key, (key, key))
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.set_xlabel("training step")
    # one legend for all panels, below them, so that no curve is hidden
    fig = axes[0].figure
    handles, labels = axes[0].get_legend_handles_labels()
    where = "outside lower center" if fig.get_layout_engine() is not None else "lower center"
    fig.legend(handles, labels, loc=where, ncols=min(len(labels), 4), fontsize=8)
    return axes


def plot_schedules(cfg, axes=None):
    """The learning rate, weight decay and EMA momentum of every step of ``cfg.train`` / ``cfg.jepa``
    (:mod:`anysat_lite.train.schedules`, :func:`anysat_lite.jepa.momentum_at`), as the loop sets them."""
    import matplotlib.pyplot as plt

    from .jepa.ema import momentum_at
    from .train.schedules import cosine, lr_at

    tc = cfg.train
    steps = np.arange(tc.steps)
    if axes is None:
        _, axes = plt.subplots(1, 3, figsize=(12, 3.1))
    axes[0].plot(steps, [lr_at(int(s), tc.steps, tc.lr, tc.min_lr, tc.warmup_steps) for s in steps])
    axes[0].axvline(tc.warmup_steps, color="grey", ls=":", lw=1, label=f"end of warm-up (step {tc.warmup_steps})")
    axes[0].set_title("learning rate: linear warm-up, cosine decay")
    axes[0].set_ylabel("learning rate")
    axes[0].legend(fontsize=7)
    axes[1].plot(steps, [cosine(int(s), tc.steps, tc.weight_decay, tc.final_weight_decay) for s in steps])
    axes[1].set_title("weight decay (cosine)")
    axes[1].set_ylabel("AdamW weight decay")
    axes[2].plot(steps, [momentum_at(int(s) + 1, tc.steps, *cfg.jepa.ema) for s in steps])
    axes[2].set_title("EMA momentum m (linear)")
    axes[2].set_ylabel("momentum m")
    for ax in axes:
        ax.set_xlabel("training step")
    return axes


def contrastive_pairs(n_modalities: int, batch: int, n_patches: int) -> torch.Tensor:
    """Role of every (anchor, other) pair of MIL-NCE's ``L = M B N`` tokens, rows in modality-major order
    (modality, tile, patch): ``[L, L]`` long, 0 = negative (in the denominator only), 1 = positive (same tile
    and patch, another modality: numerator and denominator), 2 = left out (same tile and modality)."""
    M, B, N = n_modalities, batch, n_patches
    mod = torch.arange(M).repeat_interleave(B * N)
    tile = torch.arange(B).repeat_interleave(N).repeat(M)
    patch = torch.arange(N).repeat(M * B)
    same_tile = tile[:, None] == tile[None, :]
    same_mod = mod[:, None] == mod[None, :]
    role = torch.zeros(M * B * N, M * B * N, dtype=torch.long)
    role[same_tile & ~same_mod & (patch[:, None] == patch[None, :])] = 1
    role[same_tile & same_mod] = 2
    return role


def plot_contrastive_pairs(
    n_modalities: int, batch: int, n_patches: int, sensors: Sequence[str] | None = None, ax=None
):
    """The ``[L, L]`` pair roles of :func:`contrastive_pairs` as a picture, with a legend."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    role = contrastive_pairs(n_modalities, batch, n_patches)
    context = globals().get("PATCH_COLOURS", {}).get("context", "#2f6db5")  # the context colour of the masks
    colours = ["white", context, "#9a9a9a"]
    if ax is None:
        _, ax = plt.subplots(figsize=(5.2, 4.6))
    L = role.shape[0]
    ax.imshow(role.numpy(), cmap=ListedColormap(colours), vmin=0, vmax=2, extent=(-0.5, L - 0.5, L - 0.5, -0.5))
    block = batch * n_patches
    for k in range(1, n_modalities):
        ax.axhline(k * block - 0.5, color="black", lw=0.8)
        ax.axvline(k * block - 0.5, color="black", lw=0.8)
    names = list(sensors) if sensors else [f"modality {m}" for m in range(n_modalities)]
    ticks = [(m + 0.5) * block - 0.5 for m in range(n_modalities)]
    ax.set_xticks(ticks)
    ax.set_xticklabels(names, fontsize=8)
    ax.set_yticks(ticks)
    ax.set_yticklabels(names, fontsize=8, rotation=90, va="center")
    ax.set_xlabel(f"other token (modality, then tile, then patch; {L} tokens)")
    ax.set_ylabel("anchor token")
    ax.set_title(f"MIL-NCE pairs: {n_modalities} modalities x {batch} tiles x {n_patches} patches")
    ax.legend(
        handles=[
            Patch(facecolor=colours[1], label="positive (same place, other modality)"),
            Patch(facecolor=colours[0], edgecolor="black", label="negative (denominator only)"),
            Patch(facecolor=colours[2], label="left out (same tile and modality)"),
        ],
        fontsize=7,
        loc="upper left",
        bbox_to_anchor=(1.02, 1.0),
    )
    return ax


def ema_memory(total_steps: int, ema=(0.996, 1.0)) -> np.ndarray:
    """``[total_steps + 1]``: the weight of the initial target parameters after each step,
    ``prod_{s <= t} m_s`` with the loop's momenta ``m_s = momentum_at(s, total_steps, *ema)``, ``s = 1..t``."""
    from .jepa.ema import momentum_at

    m = np.array([momentum_at(s, total_steps, *ema) for s in range(1, total_steps + 1)], dtype=np.float64)
    return np.concatenate([[1.0], np.cumprod(m)])


def plot_ema_memory(runs: dict, ax=None):
    """How much of its initialisation the EMA target keeps along training, for several schedules.

    ``runs``: ``{name: (total_steps, (m_start, m_end))}``; the x axis is the fraction of training done.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.4))
    for name, (steps, ema) in runs.items():
        w = ema_memory(steps, ema)
        ax.plot(np.arange(steps + 1) / steps, w, label=f"{name}: {steps} steps, m {ema[0]:g} -> {ema[1]:g}")
    ax.set_yscale("log")
    ax.set_xlabel("fraction of training done (step / total steps)")
    ax.set_ylabel("weight of the initial target (log scale)")
    ax.set_title("What the EMA target keeps of its random initialisation")
    ax.legend(fontsize=7)
    return ax


__all__ += [
    "plot_context_statistics",
    "plot_monitor_runs",
    "plot_schedules",
    "contrastive_pairs",
    "plot_contrastive_pairs",
    "ema_memory",
    "plot_ema_memory",
]
