"""Scale-out through Hugging Face accelerate: who am I, which categories are mine, and collectives.

`accelerate launch --multi_gpu --num_processes N -m genpromp_annotate train-project …` (or plain
`torchrun`) starts N processes; each calls `process_context()`. Without CUDA the processes talk over
gloo on CPU (accelerate only picks gloo when told the run is a CPU run, which this module does when no
GPU is present or `--device cpu` is given). A single, unlaunched process is a world of one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

T = TypeVar("T")


@dataclass(frozen=True)
class ProcessContext:
    """This process's place in the run."""

    rank: int
    world_size: int
    device: torch.device
    state: Any  # accelerate.PartialState

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            self.state.wait_for_everyone()

    def broadcast(self, value: T) -> T:
        """Rank 0's `value` on every rank (any picklable object)."""
        if self.world_size == 1:
            return value
        from accelerate.utils import broadcast_object_list

        box: list[Any] = [value if self.is_main else None]
        broadcast_object_list(box, from_process=0)
        return box[0]

    def gather(self, value: T) -> list[T]:
        """Every rank's `value`, in rank order, on every rank."""
        if self.world_size == 1:
            return [value]
        from accelerate.utils import gather_object

        return list(gather_object([value]))


def launched_world_size() -> int:
    """The number of processes a launcher (accelerate, torchrun, MPI) announced; 1 when not launched."""
    for name in ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 1


def process_context(device: str | None = None) -> ProcessContext:
    """Initialise (once) and describe the process group; CPU/gloo when there is no GPU or `device` is cpu."""
    from accelerate import PartialState

    cpu = (device is not None and str(device).startswith("cpu")) or not torch.cuda.is_available()
    if launched_world_size() == 1:
        # Nothing to coordinate: do not touch torch.distributed, just honour --device.
        from genpromp_annotate.engine.loading import choose_device

        return ProcessContext(rank=0, world_size=1, device=choose_device(device), state=None)
    state = PartialState(cpu=cpu)
    chosen = torch.device(device) if device and not cpu and ":" in str(device) else state.device
    if cpu:
        chosen = torch.device("cpu")
    return ProcessContext(rank=state.process_index, world_size=state.num_processes, device=chosen, state=state)


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    """Items `rank, rank + N, rank + 2N, …`: each item on exactly one rank, shards differing by at most one."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size}")
    return list(items[rank::world_size])


def shard_by_weight(items: Sequence[T], weights: Sequence[int], rank: int, world_size: int) -> list[T]:
    """Greedy balance: heaviest first to the lightest rank (ties to the lower rank); deterministic.

    Used for categories, whose cost is their image count: 1000 categories of 10–1300 images each would
    leave one rank with much more work under round-robin.
    """
    if len(items) != len(weights):
        raise ValueError("one weight per item is needed")
    loads = [0] * world_size
    owner = [0] * len(items)
    for index in sorted(range(len(items)), key=lambda i: (-weights[i], i)):
        target = min(range(world_size), key=lambda r: (loads[r], r))
        owner[index] = target
        loads[target] += weights[index]
    return [item for item, who in zip(items, owner) if who == rank]
