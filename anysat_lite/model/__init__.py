"""The AnySat encoder, one paper concept per module (see :mod:`.anysat` for the pipeline)."""
from .anysat import OUTPUTS, AnySat, TokenSet

__all__ = ["AnySat", "TokenSet", "OUTPUTS"]
