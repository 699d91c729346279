"""Framework-neutral core of the PyTorch/MindSpore/ONNX comparison harness (imports no framework)."""

__version__ = "0.1.0"
