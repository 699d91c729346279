"""Datasets as numpy: the registry and loading, file readers, where files are, fitting to a model, batches."""
