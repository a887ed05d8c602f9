"""Pruning retraining and centroid fine-tuning under DistributedDataParallel.

Two local processes (gloo backend, spawned) each train on their half of every global
batch; the result must be identical on both ranks and equal, up to the order of float
additions, to one process training on the whole global batches. float64 makes that order
matter only around 1e-16, so the comparison can be tight.
"""

from __future__ import annotations

import socket
import sys

import pytest

torch = pytest.importorskip("torch", reason="the torch adapter needs PyTorch (pip install 'dcformat[torch]')")
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from torch import nn  # noqa: E402

from dcformat.paper.training import train_epoch  # noqa: E402
from dcformat.torch.prune import MagnitudePruner  # noqa: E402
from dcformat.torch.quantize import TrainedQuantizer  # noqa: E402

GLOBAL_BATCH = 16
WORLD_SIZE = 2

pytestmark = pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="torch.distributed with gloo is not available")


def _data():
    g = torch.Generator().manual_seed(123)
    x = torch.randn(96, 12, generator=g, dtype=torch.float64)
    y = (x[:, :3].sum(1) > 0).long() + (x[:, 3] > 1).long()
    return x, y


def _pipeline(distributed: bool) -> dict[str, torch.Tensor]:
    """Prune (two rounds with retraining), quantize, fine-tune; the same code for 1 or N processes."""
    from torch.nn.parallel import DistributedDataParallel

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 3)).double()
    x, y = _data()
    wrap = (lambda m: DistributedDataParallel(m)) if distributed else (lambda m: m)
    generator = torch.Generator().manual_seed(7)

    pruner = MagnitudePruner(model, sparsity={"0.weight": 0.6, "2.weight": 0.5})
    for progress in (0.5, 1.0):
        pruner.step(progress)
        trained = wrap(model)
        optimizer = torch.optim.SGD(trained.parameters(), lr=0.1)
        pruner.attach(optimizer)
        for _ in range(2):
            train_epoch(trained, x, y, optimizer, batch_size=GLOBAL_BATCH, generator=generator)

    TrainedQuantizer(model, bits=3).quantize()
    tuned = wrap(model)  # a new wrapper: the trainable parameters are now the codebooks
    optimizer = torch.optim.SGD(tuned.parameters(), lr=0.05)
    for _ in range(2):
        train_epoch(tuned, x, y, optimizer, batch_size=GLOBAL_BATCH, generator=generator)
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def _worker(rank: int, init_method: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=WORLD_SIZE)
    try:
        torch.save(_pipeline(distributed=True), f"{out_dir}/rank{rank}.pt")
        # Neither rank tears down its gloo connections while the other may still use them: a
        # rank leaving first has made the other's gloo thread abort the process (SIGABRT,
        # "terminate called without an active exception"), once in many CI runs.
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(sys.platform == "win32", reason="spawned gloo jobs are slow and flaky on Windows")
def test_ddp_two_processes_match_one_process(tmp_path):
    mp.spawn(_worker, args=(f"tcp://127.0.0.1:{_free_port()}", str(tmp_path)), nprocs=WORLD_SIZE, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD_SIZE)]
    single = _pipeline(distributed=False)

    assert ranks[0].keys() == single.keys()
    assert {"0.weight_codebook", "0.weight_codes", "0.weight_mask", "2.weight_codebook"} <= set(single)
    for name in single:
        # Both ranks end with exactly the same masks, codes and codebooks ...
        assert torch.equal(ranks[0][name], ranks[1][name]), f"{name} differs between ranks"
        # ... equal to one process on the whole global batch (masks and codes exactly).
        if name.endswith(("_mask", "_codes")):
            assert torch.equal(ranks[0][name], single[name]), name
        else:
            torch.testing.assert_close(ranks[0][name], single[name], rtol=1e-10, atol=1e-12, msg=name)
    assert single["0.weight_mask"].double().mean().item() == pytest.approx(0.4, abs=0.01)
