"""Evaluators: anything that gives logits (and per-layer outputs) for inputs, with a name and provenance."""
