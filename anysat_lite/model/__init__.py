"""The AnySat encoder, one paper concept per module (see :mod:`.anysat` for the pipeline)."""

from .anysat import OUTPUTS, AnySat, TokenSet, compile_blocks

__all__ = ["AnySat", "TokenSet", "OUTPUTS", "compile_blocks"]
