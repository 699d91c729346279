"""The model spec: layer kinds and their graph (spec), the registered models (zoo), seeded weights (weights)."""
