"""anysat_lite: a notebook-first, faithful reproduction of AnySat (Astruc et al., CVPR 2025)."""

from .config import Config, ModelConfig, get_config, load_config, model_config
from .sensors import SENSORS, Sensor, get_sensor, register_sensor

__version__ = "0.1.0"


def __getattr__(name):  # lazy: importing the package must stay cheap for notebooks/CLI
    if name == "AnySat":
        from .model import AnySat

        return AnySat
    if name == "load_official":
        from .model.official import load_official

        return load_official
    raise AttributeError(name)


__all__ = [
    "AnySat",
    "Config",
    "ModelConfig",
    "SENSORS",
    "Sensor",
    "get_config",
    "get_sensor",
    "load_config",
    "load_official",
    "model_config",
    "register_sensor",
]
