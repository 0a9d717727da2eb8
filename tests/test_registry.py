"""The dataset registry: built-in readers by name (imported lazily) and user-registered classes."""

import importlib
import inspect
import subprocess
import sys

import numpy as np
import pytest
from torch.utils.data import Dataset

from anysat_lite.data import registry
from anysat_lite.data.readers import choose_dates, item_rng
from anysat_lite.data.registry import DATASETS, dataset_names, get_dataset, register_dataset
from anysat_lite.sensors import SENSORS

BUILTIN = ("treesatai-ts", "pastis-hd", "flair", "planted", "s2naip-urban", "rasters")


@pytest.fixture
def clean_registry(monkeypatch):
    monkeypatch.setattr(registry, "DATASETS", dict(DATASETS))
    return registry.DATASETS


def test_builtin_names_are_listed_without_importing_the_readers():
    assert set(BUILTIN) <= set(dataset_names())
    code = (
        "import sys, anysat_lite.data.registry as r; r.dataset_names(); "
        "print(any(m in sys.modules for m in ('anysat_lite.data.pastis', 'anysat_lite.data.treesatai')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_readers_follow_the_interface(name):
    module = registry._BUILTIN[name].split(":")[0]
    pytest.importorskip(module, reason=f"{module} is written on another branch")
    cls = get_dataset(name)
    assert issubclass(cls, Dataset) and cls.name == name
    params = list(inspect.signature(cls.__init__).parameters)
    assert params[:6] == ["self", "root", "split", "sensors", "max_dates", "seed"]
    if name != "rasters":  # the rasters dataset takes its sensors and classes from the manifest
        assert cls.sensors and all(s in SENSORS for s in cls.sensors) and cls.classes
        assert cls.tile_m > 0 and set(cls.tasks) <= {"label", "multilabel", "segmentation"} and cls.tasks


def test_user_classes_register_without_editing_the_package(clean_registry):
    class MyTiles(Dataset):
        name = "my-tiles"

    register_dataset("my-tiles", MyTiles)
    assert get_dataset("my-tiles") is MyTiles and "my-tiles" in dataset_names()
    with pytest.raises(ValueError, match="'my-tiles' is already registered"):
        register_dataset("my-tiles", MyTiles)
    register_dataset("my-tiles", "anysat_lite.data.pastis:PastisHDDataset", overwrite=True)
    assert get_dataset("my-tiles") is importlib.import_module("anysat_lite.data.pastis").PastisHDDataset
    register_dataset("broken", "anysat_lite.data.no_such_module:X")
    with pytest.raises(ImportError, match="dataset 'broken': cannot import 'anysat_lite.data.no_such_module:X'"):
        get_dataset("broken")
    with pytest.raises(ValueError, match="import string must look like 'package.module:Class'"):
        register_dataset("x", "anysat_lite.data.pastis.PastisHDDataset")
    with pytest.raises(TypeError, match="expected a Dataset class"):
        register_dataset("x", 3)
    with pytest.raises(KeyError, match="unknown dataset 'nope'; registered: treesatai-ts, pastis-hd"):
        get_dataset("nope")


def test_item_rng_and_choose_dates():
    a, b = item_rng(0, 0, 5), item_rng(0, 0, 5)
    assert a.integers(1 << 30) == b.integers(1 << 30)
    assert item_rng(0, 1, 5).integers(1 << 30) != item_rng(0, 0, 5).integers(1 << 30)
    assert choose_dates(5, item_rng(0, 0, 0)).tolist() == [0, 1, 2, 3, 4]
    keep = choose_dates(30, item_rng(0, 0, 0), max_dates=20)
    assert len(keep) == 20 and len(set(keep.tolist())) == 20 and np.all(np.diff(keep) > 0)
    assert len(choose_dates(10, item_rng(0, 0, 0), keep_fraction=0.3)) == 3  # int(10 * 0.3)
    assert len(choose_dates(2, item_rng(0, 0, 0), keep_fraction=0.1)) == 1  # never zero dates
