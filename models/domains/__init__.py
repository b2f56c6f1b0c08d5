"""Layer tasks: the procedural worlds with exact ground truth."""
