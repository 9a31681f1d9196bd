"""Benchmarks (DESIGN.md §5): CUDA-event timings after warm-up, printed as one table."""
