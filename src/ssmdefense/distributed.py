"""Data-parallel training under ``torchrun``: which process this is, and the few collective steps the
training loop needs around ``torch.nn.parallel.DistributedDataParallel``.

``torchrun --nproc-per-node N -m ssmdefense defend ...`` starts N processes with ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous in their environment; ``World.from_env()`` reads them
and ``init()`` joins the process group (gloo on CPU, NCCL on CUDA). A run started without torchrun is
a world of one and never touches ``torch.distributed``.

How the loop splits a run (docs/scale.md):

- ``--batch-size`` is the **global** batch. Every rank draws the same global batches from the same
  seeded shuffle as a one-process run (``RankBatches``), and takes its contiguous share of each
  (sizes differ by at most one). DDP's gradient average is weighted by those shares
  (``weighted_average_hook``), so each optimizer step follows the gradient of the mean loss over the
  whole global batch, as in one process. A last global batch smaller than the number of ranks is
  skipped (at most N - 1 samples per epoch).
- Each rank generates the adversarial examples of its own share. Its random generators are seeded
  from (seed, rank, epoch) at the start of every epoch, so a run, and a resumed run, is repeatable.
- The per-epoch evaluation is sharded the same way and its counts summed over ranks.
- Only rank 0 writes the run directory, checkpoints and report.

``DistributedSampler`` is not used because it shuffles by its own permutation, so a run on N
processes would see other batches than the same run on one; ``RankBatches`` reuses the loop's own
shuffled ``DataLoader`` over indices, so the global batches are the one-process run's exactly.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import RankLost, SSMDefenseError
from .seeding import seed_everything


@dataclass(frozen=True)
class World:
    """This process's place in the run: ``rank`` of ``size`` processes, ``local_rank`` on its node."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> World:
        """The world ``torchrun`` describes in the environment (a world of one without it)."""
        try:
            size = int(os.environ.get("WORLD_SIZE", "1"))
            rank = int(os.environ.get("RANK", "0"))
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        except ValueError as exc:
            raise SSMDefenseError(f"torchrun's RANK/WORLD_SIZE/LOCAL_RANK are not integers: {exc}") from None
        return cls(rank, size, local_rank)

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes files and prints the report."""
        return self.rank == 0


def current() -> World:
    """The world of the joined process group, or of one process."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    return World()


def init(device_type: str, timeout_minutes: float = 30.0) -> World:
    """Join the process group ``torchrun`` set up (once; gloo on CPU, NCCL on GPU) and return this
    process's ``World``; a world of one joins nothing."""
    world = World.from_env()
    if not world.distributed or dist.is_initialized():
        return world
    backend = "nccl" if device_type == "gpu" else "gloo"
    if device_type == "gpu":
        torch.cuda.set_device(world.local_rank)
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes))
    except (RuntimeError, ValueError) as exc:
        raise SSMDefenseError(f"could not join the distributed run ({backend}): {str(exc).splitlines()[0]}") from None
    return world


def shutdown() -> None:
    """Leave the process group, if joined."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a ``DistributedDataParallel`` wrapper (``model`` itself otherwise)."""
    return model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model


def rank_seed(seed: int, rank: int, epoch: int) -> int:
    """The seed of rank ``rank``'s random generators in epoch ``epoch`` of a distributed run."""
    return (seed * 1_000_003 + rank * 10_007 + epoch) % 2**63


def _lost(exc: BaseException) -> RankLost:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    first = first.rsplit("] ", 1)[-1]  # gloo's "[.../pair.cc:538] Read error ...: Connection reset by peer"
    return RankLost(f"another process of the distributed run stopped ({first})")


#: what gloo and NCCL say when a peer process is gone
_LOST_PEER = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "gloo/transport", "NCCL")


@contextmanager
def peers_watched() -> Iterator[None]:
    """Run a block that communicates (a DDP backward pass): an error saying a peer is gone becomes
    ``RankLost``; any other error passes unchanged."""
    try:
        yield
    except RuntimeError as exc:
        if isinstance(exc, dist.DistBackendError) or any(s in str(exc) for s in _LOST_PEER):
            raise _lost(exc) from None
        raise


def all_sum(values: list[float], device: torch.device | str = "cpu") -> list[float]:
    """``values`` summed over all ranks (themselves in a world of one); ``RankLost`` if a rank is gone."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)  # (K)
    try:
        dist.all_reduce(t)
    except (RuntimeError, dist.DistBackendError) as exc:
        raise _lost(exc) from None
    return t.tolist()


def all_gather(value: object) -> list[object]:
    """Every rank's ``value`` (a small picklable object, such as a dict of CPU tensors), in rank order
    (``[value]`` in a world of one); ``RankLost`` if a rank is gone."""
    if not (dist.is_available() and dist.is_initialized()):
        return [value]
    gathered: list[object] = [None] * dist.get_world_size()
    try:
        dist.all_gather_object(gathered, value)
    except (RuntimeError, dist.DistBackendError) as exc:
        raise _lost(exc) from None
    return gathered


def barrier() -> None:
    """Wait for every rank; ``RankLost`` if one is gone."""
    if dist.is_available() and dist.is_initialized():
        try:
            dist.barrier()
        except (RuntimeError, dist.DistBackendError) as exc:
            raise _lost(exc) from None


def broadcast(value: object) -> object:
    """Rank 0's ``value`` (a small JSON-like object) on every rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    box = [value]
    try:
        dist.broadcast_object_list(box, src=0)
    except (RuntimeError, dist.DistBackendError) as exc:
        raise _lost(exc) from None
    return box[0]


def check_in_sync(model: torch.nn.Module, what: str) -> None:
    """An ``SSMDefenseError`` unless every rank holds the same weights (their checksum is rank 0's):
    a training step that bypassed DDP would leave each rank trained on its own share alone."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    with torch.no_grad():
        local = float(sum(p.double().sum() for p in model.parameters()))
    reference = broadcast(local)
    differ = all_sum([float(abs(local - reference) > 1e-6 * max(1.0, abs(reference)))])[0]
    if differ:
        raise SSMDefenseError(
            f"{what}: the weights of {int(differ)} rank(s) differ from rank 0's; its training step does not "
            f"pass its gradients through DistributedDataParallel, so it cannot train under torchrun"
        )


def share(n: int, world: World) -> slice:
    """Rank ``world.rank``'s contiguous share of ``n`` items (``torch.tensor_split``'s sizes)."""
    base, extra = divmod(n, world.size)
    start = world.rank * base + min(world.rank, extra)
    return slice(start, start + base + (world.rank < extra))


class RankBatches:
    """A batch sampler: this rank's share of each global batch that ``index_loader`` (a shuffled
    ``DataLoader`` over ``range(n)`` with the global ``batch_size``) draws. ``global_sizes[k]`` is
    the size of the k-th global batch it yields (the loop weighs that batch's gradients with it)."""

    def __init__(self, index_loader: torch.utils.data.DataLoader, world: World, n: int, batch_size: int):
        self.index_loader, self.world = index_loader, world
        self.global_sizes = [batch_size] * (n // batch_size)
        if n % batch_size >= world.size:  # a smaller last batch, unless too small to share
            self.global_sizes.append(n % batch_size)

    def __iter__(self):
        for indices in self.index_loader:  # (B) a global batch
            if len(indices) < self.world.size:
                continue  # too small to give every rank a sample: skipped on every rank alike
            yield indices[share(len(indices), self.world)].tolist()  # this rank's share (b)

    def __len__(self) -> int:
        return len(self.global_sizes)


class GradientWeight:
    """The state of ``weighted_average_hook``: the weight of this rank's gradients in the batch being
    trained, its share's size over the mean share (1.0 when all shares are equal)."""

    def __init__(self):
        self.weight = 1.0

    def set(self, local: int, global_size: int, world: World) -> None:
        self.weight = local * world.size / global_size


def weighted_average_hook(state, bucket):  # noqa: ANN001, ANN201 (DDP checks real annotations; ours are strings)
    """A DDP communication hook: this rank's gradient bucket times ``state.weight``, averaged over the
    ranks, so the result is the gradient of the mean loss over the global batch even when the shares
    differ in size (DDP's own hook averages the ranks' means with equal weights)."""
    tensor = bucket.buffer()  # (P) flattened gradients of this bucket
    tensor.mul_(state.weight / dist.get_world_size())
    future = dist.all_reduce(tensor, async_op=True).get_future()
    return future.then(lambda f: f.value()[0])


class Strategy:
    """How ``TrainingLoop.fit`` trains in this process, alone or as one rank of a DDP run: the one
    place that knows the difference. It wraps the model (DDP with the weighted gradient average),
    draws the batches (this rank's share of the one-process run's global batches), reseeds each
    epoch per rank, sums and gathers over the ranks, and says whether this process is the main one.
    In a world of one every step is the plain one and ``torch.distributed`` is never touched."""

    def __init__(self, world: World | None = None):
        self.world = world or current()
        self.main = self.world.main
        self.shares: RankBatches | None = None
        self._weight: GradientWeight | None = None

    def check_batch_size(self, batch_size: int) -> None:
        if batch_size < self.world.size:
            raise SSMDefenseError(f"batch size {batch_size} is smaller than the {self.world.size} processes sharing it")

    def data(
        self, dataset: torch.utils.data.Dataset, batch_size: int, seed: int, num_workers: int
    ) -> tuple[torch.Generator, torch.utils.data.DataLoader]:
        """(the shuffle generator, saved with the resume state; the ``DataLoader`` of this rank's
        batches) over ``dataset``, a ``torch.utils.data.Dataset`` of (x, y) items."""
        generator = torch.Generator().manual_seed(seed)
        index_loader = torch.utils.data.DataLoader(
            range(len(dataset)), batch_size=batch_size, shuffle=True, generator=generator
        )  # (B) index batches: the global batches of one process
        self.shares = RankBatches(index_loader, self.world, len(dataset), batch_size)
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_sampler=self.shares,
            num_workers=num_workers,
            generator=torch.Generator().manual_seed(seed + self.world.rank),  # worker seeds, not the global RNG
        )
        return generator, loader

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """The module to train: ``model`` itself, or under torchrun DDP around it, its gradient
        average weighted by each rank's share of the batch."""
        if not self.world.distributed:
            return model
        self._weight = GradientWeight()
        ddp = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False
        )
        ddp.register_comm_hook(self._weight, weighted_average_hook)
        return ddp

    def start_epoch(self, seed: int, epoch: int) -> None:
        """Under torchrun, each rank its own attack randomness for ``epoch``, repeatable and resumable."""
        if self.world.distributed:
            seed_everything(rank_seed(seed, self.world.rank, epoch))

    def start_batch(self, batch: int, local: int) -> None:
        """Before training batch ``batch`` (from 1) of ``local`` samples on this rank."""
        if self._weight is not None:
            self._weight.set(local, self.shares.global_sizes[batch - 1], self.world)

    def sum(self, values: list[float]) -> list[float]:
        return all_sum(values)

    def gather(self, value: object) -> list[object] | None:
        """Every rank's ``value`` in rank order under torchrun; None in one process."""
        return all_gather(value) if self.world.distributed else None

    def in_sync(self, model: torch.nn.Module, what: str) -> None:
        check_in_sync(model, what)

    def barrier(self) -> None:
        barrier()
