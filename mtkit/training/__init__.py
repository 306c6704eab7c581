"""Training: the loop, its optimiser, validation, progress, signals and processes."""
