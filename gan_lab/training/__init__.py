"""The training loop, its fast path (CUDA graphs, data-parallel, the device) and the cures applied while training."""
