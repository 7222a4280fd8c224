"""The LightningModule: any backbone plus a separate head, its optimizer and learning-rate schedule."""

from transferlab.classifier.module import ImageClassifier, count_parameters

__all__ = ["ImageClassifier", "count_parameters"]
