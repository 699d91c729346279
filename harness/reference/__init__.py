"""The float64 referee in plain numpy: one table of layer kinds, eval forward, train-mode gradients, optimizers."""
