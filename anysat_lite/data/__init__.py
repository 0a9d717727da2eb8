"""Data: the sample contract, readers (GeoTIFF, the GeoPlex datasets, a raster manifest) and their registry,
the embedded world, normalisation, datasets and batch plans, and the step-indexed input pipeline."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["repo_data_dir", "sample_dir"]


def repo_data_dir() -> Path:
    """The repository's ``data/`` folder (override with ``ANYSAT_LITE_DATA``)."""
    return Path(os.environ.get("ANYSAT_LITE_DATA", Path(__file__).resolve().parents[2] / "data"))


def sample_dir() -> Path:
    """The real TreeSatAI-TS sample tile shipped with the project."""
    return repo_data_dir() / "treesatai_ts_sample"
