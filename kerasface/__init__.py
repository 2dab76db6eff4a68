"""kerasface: face-recognition model zoo on TensorFlow/Keras 3 with margin heads and export."""

__version__ = "0.1.0"

from kerasface import backbones, heads, losses, models  # noqa: E402

__all__ = ["__version__", "backbones", "heads", "losses", "models"]
