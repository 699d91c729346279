"""The PyTorch backend: realises harness ModelSpecs as torch.nn modules (cpu, cuda, npu)."""
