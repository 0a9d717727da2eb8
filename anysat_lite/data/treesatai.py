"""Reader for the TreeSatAI-TS format (aerial GeoTIFF + Sentinel ``.h5`` per tile).

Each tile ``<name>`` has ``<name>.tif`` (0.2 m aerial, 304 x 304 px, R G B NIR) and
``<name>.h5`` with ``sen-2-data [T, 10, 6, 6]``, ``sen-2-masks [T, 10, 6, 6]`` (channel 0:
snow, 1: cloud probability in %), ``sen-1-asc-data [T, 2, 6, 6]``, ``sen-1-des-data`` and
``*-products`` (product names; their first ``YYYYMMDD`` is the acquisition date).
Files may sit in one folder or in the official ``aerial/`` / ``sentinel-ts/`` sub-folders.

The genus label is the first word of the tile name (``Abies_alba_1_...`` -> ``Abies``);
a TreeSatAI multi-label JSON (``{"<name>.tif": [["Abies", 0.7], ...]}``) can be given too.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import rasterio
import torch

from .io import date_from_name

__all__ = ["TreeSatAITS", "CLASSES", "read_products"]

CLASSES = ("Abies", "Acer", "Alnus", "Betula", "Cleared", "Fagus", "Fraxinus", "Larix", "Picea", "Pinus",
           "Populus", "Prunus", "Pseudotsuga", "Quercus", "Tilia")
_SERIES = {"s2": "sen-2", "s1-asc": "sen-1-asc", "s1-des": "sen-1-des"}


def read_products(names) -> np.ndarray:
    """Product names (bytes or str) -> day-of-year ``[T]`` (1-based, ``tm_yday``)."""
    out = []
    for n in names:
        n = n.decode() if isinstance(n, bytes) else str(n)
        out.append(date_from_name(n).timetuple().tm_yday)
    return np.asarray(out, dtype=np.int64)


class TreeSatAITS:
    """TreeSatAI-TS tiles under ``root``.

    Args:
        root: folder holding ``*.tif`` and ``*.h5`` (searched recursively).
        labels_json: optional TreeSatAI multi-label file.
        cloud_threshold: a S2 date is valid when its mean cloud and snow probabilities are below this (%).
    """

    CLASSES = CLASSES

    def __init__(self, root: str | Path, labels_json: str | Path | None = None, cloud_threshold: float = 50.0):
        self.root = Path(root)
        tifs = {p.stem: p for p in self.root.rglob("*.tif")}
        h5s = {p.stem: p for p in self.root.rglob("*.h5")}
        self.names = sorted(set(tifs) & set(h5s))
        if not self.names:
            raise FileNotFoundError(f"no TreeSatAI-TS tile (<name>.tif + <name>.h5) under {self.root}")
        self._tif, self._h5 = tifs, h5s
        self.cloud_threshold = cloud_threshold
        self.multilabels = json.loads(Path(labels_json).read_text()) if labels_json else None

    def __len__(self) -> int:
        return len(self.names)

    def label(self, name: str) -> int:
        genus = name.split("_")[0]
        if genus not in CLASSES:
            raise ValueError(f"{name}: genus {genus!r} is not a TreeSatAI class {CLASSES}")
        return CLASSES.index(genus)

    def multilabel(self, name: str) -> np.ndarray:
        y = np.zeros(len(CLASSES), dtype=bool)
        if self.multilabels is not None and f"{name}.tif" in self.multilabels:
            for genus, _share in self.multilabels[f"{name}.tif"]:
                y[CLASSES.index(genus)] = True
        else:
            y[self.label(name)] = True
        return y

    def read(self, name: str) -> dict:
        """All data of one tile as numpy arrays (no batch axis).

        Keys: ``aerial [4, 300, 300]`` float32 (crop 2:302 of the GeoTIFF), ``s2 [T, 10, 6, 6]``,
        ``s2_dates [T]`` (day-of-year), ``s2_cloud``/``s2_snow [T]`` (mean probability, %),
        ``s2_mask [T]`` (valid dates), ``s1-asc [T, 2, 6, 6]`` + dates, ``s1-des`` + dates,
        ``s1 [T, 3, 6, 6]`` (ascending VV, VH, VV/VH as the official demo) + dates,
        ``label`` (genus index), ``multilabel [15]``, ``gsd``/``crs``/``transform`` of the aerial.
        """
        out: dict = {}
        with rasterio.open(self._tif[name]) as src:
            img = src.read().astype(np.float32)
            if img.shape[1] < 302 or img.shape[2] < 302:
                raise ValueError(f"{name}.tif: expected 304 x 304 px, got {img.shape[1]} x {img.shape[2]}")
            out["aerial"] = img[:, 2:302, 2:302]
            out["crs"], out["transform"], out["gsd"] = src.crs.to_wkt(), tuple(src.transform)[:6], abs(src.transform.a)
        with h5py.File(self._h5[name], "r") as f:
            for key, prefix in _SERIES.items():
                if f"{prefix}-data" not in f:
                    continue
                out[key] = np.asarray(f[f"{prefix}-data"], dtype=np.float32)
                out[f"{key}_dates"] = read_products(f[f"{prefix}-products"][()])
            if "sen-2-masks" in f:
                masks = np.asarray(f["sen-2-masks"], dtype=np.float32)
                out["s2_snow"] = masks[:, 0].mean(axis=(1, 2))
                out["s2_cloud"] = masks[:, 1].mean(axis=(1, 2))
                out["s2_mask"] = (out["s2_cloud"] < self.cloud_threshold) & (out["s2_snow"] < self.cloud_threshold)
        if "s1-asc" in out:
            asc = out["s1-asc"]
            out["s1"] = np.concatenate([asc, asc[:, :1] / np.maximum(asc[:, 1:2], 1e-6)], axis=1)
            out["s1_dates"] = out["s1-asc_dates"]
        out["label"] = self.label(name)
        out["multilabel"] = self.multilabel(name)
        return out

    def sample(self, name: str, sensors: Sequence[str] = ("aerial", "s2", "s1-asc"), max_dates: int | None = None,
               valid_only: bool = True) -> dict[str, torch.Tensor]:
        """A batch-of-one model sample with the given sensors (dates evenly sub-sampled to ``max_dates``)."""
        raw = self.read(name)
        sample: dict[str, torch.Tensor] = {}
        for s in sensors:
            if s not in raw:
                raise KeyError(f"{name}: sensor {s!r} not in this tile (has: aerial, s2, s1-asc, s1-des, s1)")
            x = raw[s]
            if s == "aerial":
                sample[s] = torch.from_numpy(x)[None]
                continue
            idx = np.arange(len(x))
            if s == "s2" and valid_only and raw["s2_mask"].any():
                idx = idx[raw["s2_mask"]]
            if max_dates is not None and len(idx) > max_dates:
                idx = idx[np.linspace(0, len(idx) - 1, max_dates).round().astype(int)]
            sample[s] = torch.from_numpy(x[idx])[None]
            sample[f"{s}_dates"] = torch.from_numpy(raw[f"{s}_dates"][idx])[None]
        return sample
