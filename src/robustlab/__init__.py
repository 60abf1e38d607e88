"""robustlab: train, attack and analyse adversarially robust models in pixel space."""

__version__ = "0.1.0"
