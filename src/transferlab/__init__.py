"""transferlab: transfer learning experiments for image classifiers (Hydra + Lightning)."""

__version__ = "0.1.0"
