"""Evaluation: metrics, baselines, bootstrap intervals, structure validity and the evaluate stage."""
