"""Framework backends, one folder each with the same file names: backend, build, trainer, forward, export, bare."""
