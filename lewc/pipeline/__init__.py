"""From a pair of models to a published results folder: the stages wired together (the API lives here)."""
