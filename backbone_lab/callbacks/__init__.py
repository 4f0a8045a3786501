"""Lightning callbacks of the training protocol (evaluation, run markers)."""
