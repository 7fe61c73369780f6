"""rna-predict: reproducible multi-stage RNA 3D structure modelling."""

__version__ = "0.1.0"
