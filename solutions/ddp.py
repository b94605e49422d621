"""Chapter 6b: data-parallel training with torch.distributed.

Every process (a rank) holds the whole model and the whole optimizer, and takes its own share
of the batch. After backward, each rank's gradients are averaged over all ranks (all_reduce),
so every rank holds the gradient of the whole batch and takes the same step: the step one
process would take on the whole batch. The weights stay equal on every rank without ever
being sent.

    torchrun --standalone --nproc_per_node 2 -m solutions.ddp           # 2 CPU processes, gloo
    torchrun --standalone --nproc_per_node 2 -m solutions.ddp --wrapper  # the same, with DDP

On a machine with GPUs the same command runs one process per GPU (nproc_per_node = the number
of GPUs) over NCCL: the backend and the device are chosen from what the machine has. In a
notebook, run_on_ranks forks the processes instead, and accumulate_gradients takes a batch in
micro-batches within one process.
"""

import argparse
import datetime
import multiprocessing as mp
import os
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from solutions.config import TINY
from solutions.training import AdamW, clip_grad_norm, param_groups, train_step, window_loss
from solutions.transformer import Transformer


def setup() -> torch.device:
    """Join the process group torchrun describes (RANK, WORLD_SIZE, MASTER_ADDR... in the
    environment): NCCL between GPUs, one per rank, or gloo between CPU processes."""
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
        return device
    dist.init_process_group("gloo")
    return torch.device("cpu")


def average_gradients(model: nn.Module) -> None:
    """Leave in every p.grad, on every rank, the mean of that gradient over all the ranks."""
    world = dist.get_world_size()
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad /= world


def accumulate_gradients(model: nn.Module, micro_batches: list[Tensor]) -> float:
    """Backpropagate the micro-batches one after the other, adding into p.grad, so that the
    gradients end as those of one batch made of all their windows; return that batch's loss.

    The way to train on a batch too large for memory: the same gradient, in several passes.
    """
    total = sum(len(batch) for batch in micro_batches)
    whole = 0.0
    for batch in micro_batches:
        # The whole batch's loss is the mean over all its windows: each micro-batch's mean
        # counts in proportion to its windows, whatever their sizes.
        loss = window_loss(model, batch) * (len(batch) / total)
        loss.backward()
        whole += loss.item()
    return whole


def run_on_ranks(fn: Callable[[int, int], Any], world_size: int = 2, timeout: float = 60.0):
    """[fn(rank, world_size) for each rank], each run in its own process, forked from this one
    and joined to the others in one gloo process group (on the CPU, over a file: no network).

    Fork, unlike spawn, hands each process `fn` as it is, even one defined in a notebook,
    without pickling it; Windows has no fork (use WSL, or torchrun and a script).
    """
    if "fork" not in mp.get_all_start_methods():
        raise RuntimeError("run_on_ranks needs the fork start method, which this system lacks")
    context = mp.get_context("fork")
    with tempfile.TemporaryDirectory() as folder:
        outs = [os.path.join(folder, f"rank{rank}.pt") for rank in range(world_size)]
        store = os.path.join(folder, "store")
        args = [(fn, rank, world_size, store, outs[rank], timeout) for rank in range(world_size)]
        with warnings.catch_warnings():  # "use of fork() may lead to deadlocks": not here,
            warnings.simplefilter("ignore", DeprecationWarning)  # the children use no threads
            ranks = [context.Process(target=_rank, args=a, daemon=True) for a in args]
            for process in ranks:
                process.start()
        deadline = time.monotonic() + timeout
        for process in ranks:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in ranks:
            if process.is_alive():
                process.kill()
                process.join()
        results = []
        for rank, out in enumerate(outs):
            if not os.path.exists(out):
                raise TimeoutError(f"rank {rank} did not finish within {timeout:g} s")
            result = torch.load(out, weights_only=False)
            if "error" in result:
                raise RuntimeError(f"rank {rank} failed:\n{result['error']}")
            results.append(result["value"])
    return results


def _rank(fn, rank: int, world_size: int, store: str, out: str, timeout: float) -> None:
    """One forked process of run_on_ranks: join the group, run fn, save what it returned."""
    torch.set_num_threads(1)  # two processes on the cores the parent had
    try:
        dist.init_process_group(
            "gloo",
            store=dist.FileStore(store, world_size),
            rank=rank,
            world_size=world_size,
            timeout=datetime.timedelta(seconds=timeout / 2),
        )
        try:
            result = {"value": fn(rank, world_size)}
        finally:
            dist.destroy_process_group()
    except BaseException:  # noqa: BLE001 (the parent reports it)
        result = {"error": traceback.format_exc()}
    torch.save(result, out)


def data_parallel_step(
    model: nn.Module, optimizer, batch: torch.Tensor, lr: float, grad_clip: float
) -> float:
    """train_step on this rank's share of the batch, its gradients averaged over the ranks
    before they are clipped and used. Returns the whole batch's loss, averaged the same way."""
    rank, world = dist.get_rank(), dist.get_world_size()
    shard = batch.chunk(world)[rank]  # equal shares: the mean of their means is the mean
    for group in optimizer.param_groups:
        group["lr"] = lr
    loss = window_loss(model, shard)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if not isinstance(model, DistributedDataParallel):  # DDP averaged them during backward
        average_gradients(model)
    clip_grad_norm(model.parameters(), grad_clip)
    optimizer.step()
    loss = loss.detach()
    dist.all_reduce(loss, op=dist.ReduceOp.SUM)
    return loss.item() / world


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="One data-parallel step against one process.")
    parser.add_argument("--wrapper", action="store_true", help="DistributedDataParallel")
    parser.add_argument("--batch", type=int, default=8, help="the whole batch, over all ranks")
    args = parser.parse_args(argv)
    device = setup()
    rank, world = dist.get_rank(), dist.get_world_size()

    # grad_clip well above the gradients' norm: a clipped gradient would hide a sum left
    # undivided (clipping rescales it), and so would Adam, whose step ignores a gradient's scale.
    cfg, lr, grad_clip = TINY.but(n_ctx=16), 1e-2, 100.0
    windows = torch.randint(
        cfg.d_vocab, (args.batch, cfg.n_ctx + 1), generator=torch.Generator().manual_seed(1)
    ).to(device)
    torch.manual_seed(0)  # the same weights on every rank (DDP would also copy rank 0's)
    model = Transformer(cfg).to(device)
    optimizer = AdamW(param_groups(model, 0.1), lr=lr, betas=(0.9, 0.95))
    if args.wrapper:
        ids = [device.index] if device.type == "cuda" else None
        model = DistributedDataParallel(model, device_ids=ids)
        optimizer = AdamW(param_groups(model.module, 0.1), lr=lr, betas=(0.9, 0.95))
    loss = data_parallel_step(model, optimizer, windows, lr, grad_clip)
    flat = lambda m, what: torch.cat([getattr(p, what).flatten() for p in m.parameters()])  # noqa: E731
    params = flat(model, "data")

    # Every rank's weights against rank 0's, and rank 0's against one process's step.
    theirs = params.clone()
    dist.broadcast(theirs, src=0)
    equal = torch.tensor([float(torch.equal(theirs, params))], device=device)
    dist.all_reduce(equal, op=dist.ReduceOp.MIN)
    if rank == 0:
        torch.manual_seed(0)
        single = Transformer(cfg).to(device)
        one_optimizer = AdamW(param_groups(single, 0.1), lr=lr, betas=(0.9, 0.95))
        one_loss = train_step(single, one_optimizer, windows, lr, grad_clip)
        same_grads = torch.allclose(flat(model, "grad"), flat(single, "grad"), 1e-4, 1e-7)
        # Adam's first step is about lr * sign(gradient): a gradient within rounding of 0
        # moves by a fraction of lr that rounding decides, so compare to lr / 100.
        gap = (flat(single, "data") - params).abs().max().item()
        how = "DistributedDataParallel" if args.wrapper else "all_reduce by hand"
        print(f"{world} ranks on {device.type} ({dist.get_backend()}, {how}), batch {args.batch}")
        print("every rank holds the same weights:", bool(equal.item()))
        print("loss, averaged over ranks == one process's:", abs(loss - one_loss) < 1e-5)
        print("gradients == the whole batch's:", same_grads)
        print("weights == one process's step on the whole batch:", gap < lr / 100)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
