"""Training: the learning-rate schedule, the loop, resume checkpoints, and one run folder end to end."""
