"""``harness port``: a user's own PyTorch model and their hand-written MindSpore port, checked as the harness
checks its own models."""
