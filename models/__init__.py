"""The GAN zoo on the study's DCGAN backbone.

``get_spec(name)`` returns a model's spec; importing this package registers
every model in ``models/zoo.py``.
"""

from models import zoo  # noqa: F401  (registers the zoo)
from models.registry import GanSpec, get_spec, model_names, register

__all__ = ["GanSpec", "get_spec", "model_names", "register"]
