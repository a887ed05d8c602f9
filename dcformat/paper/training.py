"""Small, explicit training and evaluation loops over in-memory tensors.

Enough for the reproduction and the tests; any other loop works with the compression
stages too (they only need ``optimizer.step()`` and a forward pass). Distributed data
parallel training is supported the plain way: every process runs the same loop with the
same seed over the same global batches and takes its own contiguous share of each batch,
so with DistributedDataParallel's gradient averaging one step equals a single-process
step on the whole global batch (when the batch divides evenly among the processes).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn
from torch.nn import functional as F

from dcformat.torch import distributed
from dcformat.torch.errors import ConfigError


def batch_indices(
    num_examples: int,
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
    shuffle: bool = True,
    rank: int | None = None,
    world_size: int | None = None,
) -> Iterator[torch.Tensor]:
    """Indices of each global batch of one epoch, this process's share of it.

    ``rank`` and ``world_size`` default to the process group's (0 and 1 outside one).
    A batch of size b is split into ``world_size`` contiguous parts (sizes differ by at
    most one); the last batch may be short.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError("train", f"batch_size must be an integer >= 1, got {batch_size!r}")
    rank = distributed.rank() if rank is None else rank
    world_size = distributed.world_size() if world_size is None else world_size
    order = torch.randperm(num_examples, generator=generator) if shuffle else torch.arange(num_examples)
    for batch in order.split(batch_size):
        yield batch.tensor_split(world_size)[rank]


def train_epoch(
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    *,
    batch_size: int,
    generator: torch.Generator | None = None,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    lr_at: Callable[[float], float] | None = None,
    progress: bool = False,
    desc: str = "train",
    epoch: float = 0.0,
) -> float:
    """One pass over ``inputs``; returns the mean training loss (of this process's shares).

    ``lr_at(epoch_float)``, if given, sets every parameter group's learning rate before each
    step, with ``epoch`` + the fraction of this epoch done as its argument.
    """
    from tqdm.auto import tqdm

    model.train()
    batches = list(batch_indices(len(inputs), batch_size, generator=generator))
    total, count = 0.0, 0
    bar = tqdm(batches, desc=desc, unit="batch", disable=not progress, leave=False)
    for step, index in enumerate(bar):
        if lr_at is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(epoch + step / len(batches))
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(inputs[index]), targets[index])
        loss.backward()
        optimizer.step()
        total += loss.item() * len(index)
        count += len(index)
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.4f}")
    return total / max(count, 1)


@torch.no_grad()
def evaluate(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, *, batch_size: int = 1000) -> float:
    """Classification error rate (fraction of ``inputs`` whose arg-max is not the target)."""
    was_training = model.training
    model.eval()
    wrong = 0
    for start in range(0, len(inputs), batch_size):
        logits = model(inputs[start : start + batch_size])
        wrong += int((logits.argmax(1) != targets[start : start + batch_size]).sum())
    model.train(was_training)
    return wrong / max(len(inputs), 1)
