"""Training: losses, scheduled-sampling schedules (and, later, the trainer and checkpoints)."""
