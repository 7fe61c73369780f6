"""Training: losses, the Lightning module and the train stage."""
