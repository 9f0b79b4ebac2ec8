"""The λ path: functional merging, BatchNorm re-estimation, one forward pass per λ with layer capture."""
