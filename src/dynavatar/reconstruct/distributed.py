"""Data-parallel avatar training over frames: ``accelerate launch -m dynavatar fit VIDEO -o OUT``.

Each step's batch of frames is drawn once, identically in every process (same seeded generator),
and split between the processes; each renders its share and back-propagates, then the gradients
are averaged in one all-reduce of a flat buffer. The average of the per-process mean losses is the
mean over the whole batch, so every process applies the step a single process would have applied
to the whole batch, and all copies of the avatar stay identical without ever being broadcast.
Densification needs the same care: the screen-space gradient statistics are summed over processes
before each clone/split/prune decision, and the split noise comes from the shared generator, so
every copy grows the same splats. The result is the single-GPU optimisation (up to the order of
floating-point sums), faster: only the rendering of the batch is divided, so the gain is largest
for large batches and resolutions (``bench fit`` prints it).

Processes are set up by accelerate (``PartialState``: NCCL on GPUs, gloo on CPU, one GPU per
process); the collectives are plain ``torch.distributed``. Without a launcher everything here is
a no-op, so the trainer has one code path.
"""

from __future__ import annotations

import contextlib
import functools
import os

import torch
from torch import Tensor

__all__ = ["DataParallel", "data_parallel"]


class DataParallel:
    """Which process this is, and the three collectives the trainer needs."""

    def __init__(self, world_size: int | None = None):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else world_size
        self.rank, self.device = 0, None
        if self.world_size > 1:
            try:
                from accelerate import PartialState
            except ImportError as exc:  # pragma: no cover - accelerate is an install requirement
                raise RuntimeError("multi-process training needs accelerate: pip install accelerate") from exc
            # reads RANK/WORLD_SIZE/MASTER_* and initialises the process group (gloo without CUDA)
            state = PartialState(cpu=not torch.cuda.is_available())
            self.rank, self.device = state.process_index, state.device

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, idx: Tensor) -> Tensor:
        """This process's equal share of a batch of frame indices (equal, so that the mean of the
        processes' mean losses is the batch's mean loss)."""
        if not self.active:
            return idx
        if len(idx) % self.world_size:
            raise ValueError(f"a batch of {len(idx)} frames cannot be split evenly over {self.world_size} processes; "
                             f"set config.batch_size (dynavatar fit --batch-size) to a multiple of {self.world_size}")
        return idx.tensor_split(self.world_size)[self.rank]

    def average_gradients(self, params: list[Tensor], loss: Tensor) -> Tensor:
        """Replace each ``p.grad`` by its mean over processes and return the mean ``loss``, in one
        all-reduce (missing grads count as 0). A NaN in any process makes the returned loss NaN,
        so every process stops at the same step instead of one waiting forever for the others."""
        if not self.active:
            return loss.detach()
        import torch.distributed as dist

        grads = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params]
        flat = torch.cat(grads + [loss.detach().reshape(1).to(grads[0].dtype)])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p)
            offset += n
        return flat[-1]

    def reduce_densify_stats(self, state) -> None:
        """Combine the processes' screen-gradient statistics (``DensifyState``) in place: view
        counts add up; gradient norms add up too but are divided by the process count, because
        each process's loss is the mean over its share, ``world_size`` times the weight a view has
        in the whole batch's mean."""
        if not self.active:
            return
        import torch.distributed as dist

        dist.all_reduce(state.grad2d)
        dist.all_reduce(state.count)
        state.grad2d /= self.world_size

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    @contextlib.contextmanager
    def main_first(self):
        """Run the block on the main process first (it fills the caches), then on the others."""
        if not self.is_main:
            self.barrier()
        yield
        if self.is_main:
            self.barrier()


@functools.lru_cache(maxsize=1)
def data_parallel() -> DataParallel:
    """The process's ``DataParallel`` (set up once, from the launcher's environment)."""
    return DataParallel()
