"""Keeping compression state identical across the processes of a distributed job.

Under ``DistributedDataParallel`` every process holds a replica of the model and the
gradients are averaged, so the replicas stay equal and each process would compute the
same masks and codebooks on its own. Broadcasting them from rank 0 anyway makes that a
guarantee rather than a consequence of bitwise-equal float arithmetic. All helpers are
no-ops outside an initialised process group.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def broadcast_(tensor: torch.Tensor, *, src: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` in place with rank ``src``'s copy (bool tensors go as uint8,
    which every backend supports)."""
    if not is_distributed():
        return tensor
    if tensor.dtype == torch.bool:
        carrier = tensor.to(torch.uint8)
        dist.broadcast(carrier, src=src)
        tensor.copy_(carrier.bool())
    else:
        dist.broadcast(tensor, src=src)
    return tensor
