"""The model spec: layer kinds and their graph (spec), the registered models (zoo), seeded weights (weights), a
user's ONNX graph as a spec (onnx_import), specs as JSON (specfile), and what a model setting names (resolve)."""
