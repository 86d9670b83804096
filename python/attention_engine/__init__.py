"""attention_engine: attention variants written in Python, compiled into fused GPU kernels."""
from . import _C

__version__ = _C.__version__
