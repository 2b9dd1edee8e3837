"""The training loop, its fast path (CUDA graphs, compile, data-parallel, device choice) and the cures applied while training (EMA, unrolling, schedules)."""
