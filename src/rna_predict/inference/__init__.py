"""Inference: load a trained model and predict structures (used by ``predict`` and ``evaluate``)."""
