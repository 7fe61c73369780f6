"""The Optuna sweep stage over the loss weights."""
