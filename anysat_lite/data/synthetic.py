"""The embedded default dataset: a seeded, procedural multi-sensor world.

Every tile starts from a **land-cover map** on a 2 m grid (weighted Voronoi parcels of
seven classes, one of them dominant).  The map is rendered at each sensor's native GSD:

* **Sentinel-2** (10 m, 10 bands, ``n_dates`` random dates a year): each parcel mixes a
  *dormant* and a *green* spectrum of its class with a class **phenology curve**
  (``green(doy)``), jittered per tile and parcel; pixels mix parcels by area; haze,
  noise and clouds (flagged in ``s2_mask``) are added.
* **Sentinel-1** (10 m, VV/VH linear power, own dates): class backscatter in dB that
  follows biomass, mixed in linear power, times Gamma(4) speckle (``s1`` adds VV/VH).
* **Aerial** (0.2 m, NIR G B R like TreeSatAI's files, uint8) and **SPOT** (1 m, R G B): the colour of each parcel
  on one summer date under a random illumination, plus textures that tell the *kind* of
  cover (tree crowns, crop rows, grass, roof blocks, water) but not which forest or crop.

Labels: ``label`` (majority class of the tile), ``multilabel`` (classes covering >= 10 %)
and ``segmentation`` (the 2 m map).  The task is built so that raw pixel statistics do
not solve it: winter and summer crops share spectra and differ only in *when* they are
green; conifer and broadleaf forests differ mostly in winter; the aerial view shows
structure, not phenology; clouds and speckle hide single dates.

Generation is vectorised and deterministic in ``WorldSpec``; worlds are cached on disk
as ``.npy`` files (memory-mapped on load).
"""

from __future__ import annotations

import hashlib
import json
import numbers
import os
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError, did_you_mean

__all__ = ["CLASSES", "WorldSpec", "generate_world", "load_world", "default_cache_dir", "SUPPORTED_SENSORS"]

CLASSES = ("conifer forest", "broadleaf forest", "winter crop", "summer crop", "grassland", "built-up", "water")
K = len(CLASSES)
SUPPORTED_SENSORS = ("aerial", "spot", "s2", "s1-asc", "s1")
LABEL_GSD = 2.0  # metres per cell of the land-cover map / segmentation labels

# Reflectance x 10000 for B2 B3 B4 B5 B6 B7 B8 B8A B11 B12: (dormant, green) per class.
_SOIL = [800, 1100, 1400, 1600, 1800, 1900, 2100, 2200, 2800, 2300]
_VEG = [300, 600, 300, 900, 2500, 3000, 3300, 3400, 1800, 900]
_SPECTRA = np.array(
    [
        (
            [250, 450, 260, 700, 1700, 2000, 2200, 2300, 1200, 600],
            [200, 420, 200, 650, 1800, 2200, 2400, 2500, 1100, 500],
        ),
        (
            [500, 700, 800, 1000, 1400, 1600, 1800, 1900, 2200, 1500],
            [280, 620, 280, 950, 2800, 3400, 3700, 3800, 1700, 800],
        ),
        (_SOIL, _VEG),
        (_SOIL, _VEG),
        (
            [700, 950, 1100, 1400, 1900, 2100, 2300, 2400, 2600, 1900],
            [320, 640, 340, 950, 2400, 2800, 3000, 3100, 1900, 1000],
        ),
        (
            [1200, 1300, 1400, 1500, 1600, 1700, 1800, 1850, 2200, 2000],
            [1200, 1300, 1400, 1500, 1600, 1700, 1800, 1850, 2200, 2000],
        ),
        ([600, 500, 300, 200, 150, 120, 100, 90, 50, 30], [600, 500, 300, 200, 150, 120, 100, 90, 50, 30]),
    ],
    dtype=np.float32,
)  # [K, 2, 10]
# Phenology: green(doy) = base + amp * exp(-((doy - centre) / width)^2 / 2)
_PHENO = np.array(
    [
        (0.75, 0.15, 190, 80),
        (0.10, 0.85, 195, 55),
        (0.05, 0.90, 135, 32),
        (0.05, 0.90, 220, 32),
        (0.40, 0.35, 165, 70),
        (0.0, 0.0, 180, 50),
        (0.0, 0.0, 180, 50),
    ],
    dtype=np.float32,
)
# S1 backscatter (dB): (VV at green 0, VV at green 1, VH at 0, VH at 1)
_S1 = np.array(
    [
        (-8.0, -7.0, -14.0, -12.5),
        (-9.5, -7.5, -17.0, -13.0),
        (-13.0, -9.0, -23.0, -15.5),
        (-13.0, -9.0, -23.0, -15.5),
        (-12.0, -10.0, -20.0, -17.0),
        (-4.0, -4.0, -11.0, -11.0),
        (-21.0, -21.0, -28.0, -28.0),
    ],
    dtype=np.float32,
)
_DOMINANT_SHARE = (0.45, 0.8)


@dataclass(frozen=True)
class WorldSpec:
    """Everything that determines a synthetic world (hashing it names its cache)."""

    n_tiles: int = 384
    tile_m: int = 60
    sensors: tuple[str, ...] = ("aerial", "s2", "s1-asc")
    n_dates: int = 12
    cloud_prob: float = 0.15
    seed: int = 0
    version: int = 5  # bump when the generator changes

    def __post_init__(self):
        for name, example in (("n_tiles", 8), ("tile_m", 60), ("n_dates", 12)):
            value = getattr(self, name)
            whole = isinstance(value, numbers.Integral) and not isinstance(value, bool)
            if not whole or value < 1 or (name == "tile_m" and value % 10):
                expected = "a positive multiple of 10 m" if name == "tile_m" else "a whole number >= 1"
                raise UserError(f"WorldSpec: {name}={value!r}: expected {expected}; e.g. {name}={example}")
        if isinstance(self.sensors, str) or not self.sensors:
            raise UserError(
                f"WorldSpec: sensors={self.sensors!r}: expected a list of one or more sensor names; "
                f"e.g. sensors=({self.sensors or 's2'!r},)"
            )
        bad = [s for s in self.sensors if s not in SUPPORTED_SENSORS]
        if bad:
            raise UserError(
                f"synthetic world cannot render {bad}; {did_you_mean(bad[0], SUPPORTED_SENSORS)}supported: "
                f"{', '.join(SUPPORTED_SENSORS)}; choose data.datasets[i].sensors among them, or pretrain on your own "
                "rasters (a rasters manifest)"
            )

    def key(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha1(blob).hexdigest()[:12]


def default_cache_dir() -> Path:
    return Path(os.environ.get("ANYSAT_LITE_CACHE", Path.home() / ".cache" / "anysat_lite"))


def _block_mean(x: np.ndarray, f: int) -> np.ndarray:
    """Average ``[..., H, W]`` over ``f x f`` blocks."""
    *lead, H, W = x.shape
    return x.reshape(*lead, H // f, f, W // f, f).mean(axis=(-3, -1))


def _smooth_noise(rng, n, size, scale_px) -> np.ndarray:
    """``[n, size, size]`` noise with features of about ``scale_px`` pixels (bilinear upsampling)."""
    low = max(2, int(np.ceil(size / max(scale_px, 1))) + 1)
    g = rng.standard_normal((n, low, low)).astype(np.float32)
    pos = np.linspace(0, low - 1.001, size, dtype=np.float32)
    i0 = pos.astype(int)
    f = pos - i0
    rows = g[:, i0] * (1 - f)[None, :, None] + g[:, i0 + 1] * f[None, :, None]
    return rows[:, :, i0] * (1 - f)[None, None, :] + rows[:, :, i0 + 1] * f[None, None, :]


def _landcover(rng, n_tiles: int, cells: int):
    """Parcels on the 2 m grid: parcel id map ``[N, c, c]``, parcel classes ``[N, P]``."""
    P = 8
    seeds = rng.uniform(0, cells, size=(n_tiles, P, 2)).astype(np.float32)
    weights = rng.uniform(0, (cells / 3) ** 2, size=(n_tiles, P)).astype(np.float32)
    yy, xx = np.meshgrid(np.arange(cells) + 0.5, np.arange(cells) + 0.5, indexing="ij")
    d2 = (yy[None, None] - seeds[:, :, 0, None, None]) ** 2 + (xx[None, None] - seeds[:, :, 1, None, None]) ** 2
    parcel = np.argmin(d2 - weights[:, :, None, None], axis=1)  # [N, c, c]
    dominant = rng.integers(0, K, size=n_tiles)
    share = rng.uniform(*_DOMINANT_SHARE, size=n_tiles)
    others = rng.integers(0, K, size=(n_tiles, P))
    is_dom = rng.uniform(size=(n_tiles, P)) < share[:, None]
    classes = np.where(is_dom, dominant[:, None], others)
    return parcel, classes


def _green(doy: np.ndarray, cls: np.ndarray, phase: np.ndarray, amp: np.ndarray) -> np.ndarray:
    """Phenology ``green in [0, 1]`` for parcels ``cls [N, P]`` at dates ``doy [N, T]`` -> ``[N, P, T]``."""
    base, a, centre, width = (_PHENO[cls][..., i] for i in range(4))
    t = doy[:, None, :].astype(np.float32)
    bump = np.exp(-0.5 * ((t - (centre + phase)[..., None]) / width[..., None]) ** 2)
    return np.clip(base[..., None] + (a * amp)[..., None] * bump, 0.0, 1.0)


def _dates(rng, n_tiles: int, T: int) -> np.ndarray:
    d = np.sort(rng.choice(np.arange(1, 366), size=(n_tiles, T), replace=True), axis=1)
    return d.astype(np.int64)


def _per_pixel(values: np.ndarray, parcel: np.ndarray, f: int) -> np.ndarray:
    """Per-parcel ``values [n, P, ...]`` on the parcel map ``[n, c, c]``, each cell repeated ``f x f`` times."""
    n, c, _ = parcel.shape
    cells = np.take_along_axis(values, parcel.reshape(n, -1, *([1] * (values.ndim - 2))), 1)
    return cells.reshape(n, c, c, *values.shape[2:]).repeat(f, axis=1).repeat(f, axis=2)


def _render_vhr(
    rng, seg_cls: np.ndarray, parcel: np.ndarray, colour: np.ndarray, gsd: float, chunk: int = 16
) -> np.ndarray:
    """Very-high-resolution image ``[N, C, H, W]`` uint8 from the 2 m map and per-parcel colours ``[N, P, C]``."""
    N, cells, _ = seg_cls.shape
    f = int(round(LABEL_GSD / gsd))
    size = cells * f
    out = np.empty((N, colour.shape[-1], size, size), dtype=np.uint8)
    coords = (np.arange(size, dtype=np.float32) + 0.5) * gsd
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    theta = rng.uniform(0, np.pi, size=(N, 8)).astype(np.float32)
    period = rng.uniform(1.5, 3.5, size=(N, 8)).astype(np.float32)
    roofs_all = rng.uniform(0.55, 1.6, size=(N, cells // 3 + 1, cells // 3 + 1)).astype(np.float32)
    big_crowns = rng.uniform(size=(N, 8)) < 0.5
    for a in range(0, N, chunk):
        b = min(N, a + chunk)
        n, pid = b - a, parcel[a:b]
        cls = seg_cls[a:b].repeat(f, axis=1).repeat(f, axis=2)
        tex = np.ones(cls.shape, dtype=np.float32)
        forest, crops, grass, built = (cls == 0) | (cls == 1), (cls == 2) | (cls == 3), cls == 4, cls == 5
        # Both forest types share the crown texture (crown size varies by parcel, not by class), both crop
        # types the row texture: aerial imagery tells forest from crop, not which forest or which crop.
        crowns = np.where(
            _per_pixel(big_crowns[a:b], pid, f),
            _smooth_noise(rng, n, size, 5.0 / gsd),
            _smooth_noise(rng, n, size, 2.5 / gsd),
        )
        tex[forest] += 0.32 * np.tanh(1.4 * crowns[forest])
        th, per = _per_pixel(theta[a:b], pid, f)[crops], _per_pixel(period[a:b], pid, f)[crops]
        _, row, col = crops.nonzero()
        along = xx[row, col] * np.cos(th) + yy[row, col] * np.sin(th)  # metres across the crop rows
        tex[crops] += 0.12 * np.sin(2 * np.pi * along / per)
        fine = _smooth_noise(rng, n, size, 0.6 / gsd)
        tex[grass] += 0.07 * fine[grass]
        roofs = roofs_all[a:b].repeat(3 * f, axis=1).repeat(3 * f, axis=2)[:, :size, :size]
        tex[built] = roofs[built]
        other = ~(forest | crops | grass | built)
        tex[other] += 0.03 * fine[other]
        rgb = _per_pixel(colour[a:b], pid, f)
        img = rgb * tex[..., None] + 4.0 * rng.standard_normal(rgb.shape, dtype=np.float32)
        out[a:b] = np.clip(img, 0, 255).astype(np.uint8).transpose(0, 3, 1, 2)
    return out


def generate_world(spec: WorldSpec) -> dict[str, np.ndarray]:
    """Render a world (no caching; see :func:`load_world`). Returns a dict of numpy arrays."""
    rng = np.random.default_rng(spec.seed)
    N, T = spec.n_tiles, spec.n_dates
    cells = int(round(spec.tile_m / LABEL_GSD))
    parcel, pclass = _landcover(rng, N, cells)
    seg = np.take_along_axis(pclass, parcel.reshape(N, -1), 1).reshape(N, cells, cells).astype(np.uint8)
    counts = np.stack([(seg == k).mean(axis=(1, 2)) for k in range(K)], axis=1)  # [N, K]
    out: dict[str, np.ndarray] = {
        "label": counts.argmax(1).astype(np.int64),
        "multilabel": counts >= 0.10,
        "segmentation": seg,
    }
    # Per-parcel jitter shared by all sensors.
    phase = rng.normal(0, 12, size=pclass.shape).astype(np.float32)
    amp = rng.uniform(0.85, 1.1, size=pclass.shape).astype(np.float32)
    spec_jit = rng.normal(1.0, 0.06, size=pclass.shape + (10,)).astype(np.float32)
    frac10 = _block_mean((parcel[:, None] == np.arange(8)[None, :, None, None]).astype(np.float32), 5)  # [N, P, h, w]

    if "s2" in spec.sensors:
        doy = _dates(rng, N, T)
        g = _green(doy, pclass, phase, amp)  # [N, P, T]
        dormant, green = _SPECTRA[pclass, 0] * spec_jit, _SPECTRA[pclass, 1] * spec_jit  # [N, P, 10]
        refl = dormant[:, :, None] + g[..., None] * (green - dormant)[:, :, None]  # [N, P, T, 10]
        img = np.einsum("nptb,nphw->ntbhw", refl, frac10)
        h = cells // 5
        haze = rng.uniform(0, 250, size=(N, T, 1, 1, 1)) * np.linspace(1, 0.2, 10)[None, None, :, None, None]
        cloud_on = rng.uniform(size=(N, T)) < spec.cloud_prob
        cloud_on[cloud_on.all(axis=1), 0] = False  # every tile keeps a clear date (n_dates = 1 included)
        cloud = np.clip(_smooth_noise(rng, N * T, h, 3).reshape(N, T, h, h) + 0.8, 0, None) * cloud_on[..., None, None]
        img = img + haze + 3500 * cloud[:, :, None] * np.linspace(1, 0.6, 10)[None, None, :, None, None]
        img = img * rng.uniform(0.9, 1.1, size=(N, 1, 1, 1, 1)) + rng.normal(0, 60, size=img.shape)
        out["s2"] = np.clip(img, 1, None).astype(np.float32)
        out["s2_dates"] = doy
        out["s2_mask"] = cloud.mean(axis=(2, 3)) < 0.3
    if "s1-asc" in spec.sensors or "s1" in spec.sensors:
        doy = _dates(rng, N, T)
        g = _green(doy, pclass, phase, amp)
        db = _S1[pclass]  # [N, P, 4]
        vv = db[..., 0:1] + g * (db[..., 1:2] - db[..., 0:1])
        vh = db[..., 2:3] + g * (db[..., 3:4] - db[..., 2:3])
        power = 10 ** (np.stack([vv, vh], axis=-1) / 10)  # [N, P, T, 2]
        img = np.einsum("nptb,nphw->ntbhw", power, frac10)
        img = img * rng.gamma(4.0, 1 / 4.0, size=img.shape)
        img = img.astype(np.float32)
        if "s1-asc" in spec.sensors:
            out["s1-asc"], out["s1-asc_dates"] = img, doy
        if "s1" in spec.sensors:
            out["s1"] = np.concatenate([img, img[:, :, :1] / np.maximum(img[:, :, 1:2], 1e-6)], axis=2)
            out["s1_dates"] = doy
    vhr = [s for s in ("aerial", "spot") if s in spec.sensors]
    if vhr:
        acq = rng.integers(140, 250, size=N)
        g = _green(acq[:, None], pclass, phase, amp)[..., 0]  # [N, P]
        dormant, green = _SPECTRA[pclass, 0] * spec_jit, _SPECTRA[pclass, 1] * spec_jit
        refl = dormant + g[..., None] * (green - dormant)  # [N, P, 10]
        rgbn = refl[..., [2, 1, 0, 6]] / 10000 * 255 * np.array([3.0, 3.0, 3.0, 1.3], dtype=np.float32)
        rgbn = rgbn * rng.uniform(0.7, 1.3, size=(N, 1, 1)).astype(np.float32)  # illumination / sensor gain
        for name, gsd, order in (("aerial", 0.2, [3, 1, 2, 0]), ("spot", 1.0, [0, 1, 2])):  # aerial: NIR G B R
            if name in vhr:
                out[name] = _render_vhr(rng, seg, parcel, rgbn[..., order].astype(np.float32), gsd)
    # Deterministic split: 60 % train, 20 % val, 20 % test.
    perm = np.random.default_rng(spec.seed + 1).permutation(N)
    split = np.zeros(N, dtype=np.int8)
    split[perm[int(0.6 * N) : int(0.8 * N)]] = 1
    split[perm[int(0.8 * N) :]] = 2
    out["split"] = split
    return out


def load_world(spec: WorldSpec, cache_dir: str | Path | None = None, mmap: bool = True) -> dict[str, np.ndarray]:
    """Generate ``spec`` once, cache it as ``.npy`` files (written atomically), and load it.

    The cache is derived data: a damaged one (a file cut short or overwritten) is removed and the world
    generated again, with a warning naming the file.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = root / "synthetic" / f"world-{spec.key()}"
    if (folder / "spec.json").exists():
        try:
            return _read_world(folder, mmap)
        except DamagedCacheError as e:
            warnings.warn(
                f"synthetic-world cache file {e.path} is damaged ({e.reason}); generating the world again",
                stacklevel=2,
            )
            _discard(folder, e)
    _write_world(spec, folder)
    return _read_world(folder, mmap)


class DamagedCacheError(UserError):
    """A file of a cached world that numpy cannot read: ``path`` and the ``reason``."""

    def __init__(self, path: Path, error: BaseException):
        self.path, self.reason = path, " ".join(str(error).split()) or type(error).__name__
        super().__init__(
            f"synthetic-world cache file {path} is damaged ({self.reason}), expected a .npy array; "
            f"delete the folder {path.parent} (data.cache_dir) and run again"
        )


def _read_world(folder: Path, mmap: bool) -> dict[str, np.ndarray]:
    """The arrays of the world cached in ``folder``; a file numpy cannot read raises :class:`DamagedCacheError`."""
    arrays = {}
    for p in sorted(folder.glob("*.npy")):
        try:
            arrays[p.stem] = np.load(p, mmap_mode="r" if mmap else None)
        except (ValueError, EOFError, OSError) as e:
            raise DamagedCacheError(p, e) from None
    return arrays


def _write_world(spec: WorldSpec, folder: Path) -> None:
    """Generate ``spec`` into ``folder``: written in a temporary folder beside it, then renamed."""
    world = generate_world(spec)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
    try:
        for k, v in world.items():
            np.save(tmp / f"{k}.npy", v)
        (tmp / "spec.json").write_text(json.dumps(asdict(spec), indent=1))
        try:
            os.replace(tmp, folder)
        except OSError:  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _discard(folder: Path, error: DamagedCacheError) -> None:
    """Remove the damaged cache ``folder``: first moved aside in one rename (a process reading it keeps its open
    files), then deleted.  ``error`` is raised when it cannot be moved."""
    try:
        aside = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".damaged-"))
    except OSError:
        raise error from None
    try:
        os.rename(folder, aside / folder.name)
    except FileNotFoundError:  # another process moved it first
        pass
    except OSError:
        shutil.rmtree(aside, ignore_errors=True)
        raise error from None
    shutil.rmtree(aside, ignore_errors=True)
