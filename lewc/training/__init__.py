"""Datasets, training recipes, the training loop and the checkpoint format (safetensors + JSON sidecar)."""
