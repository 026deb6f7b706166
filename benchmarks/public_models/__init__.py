"""Public architectures (MLPerf Tiny, timm-style mobile CNNs, small transformers, encoder-decoders,
temporal and recurrent nets) built in code with seeded weights, to check the compiler on models
its own tests never see. See benchmarks/public_zoo.py."""

from .registry import PublicModel
from .catalog import PUBLIC_MODELS

__all__ = ["PUBLIC_MODELS", "PublicModel"]
