"""Benchmarks (DESIGN.md §5): CUDA-event timings after warm-up, printed as one table."""


def sync_cuda() -> None:
    """Wait for queued GPU work so wall-clock stage times are true (no-op without CUDA)."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
