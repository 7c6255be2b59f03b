"""Load a DCP export in a 2-process gloo group, resharded: `python -m tests.dcp_reshard CKPT OUT`.

Every tensor with at least two rows is loaded as a DTensor sharded by rows over a
2-rank CPU mesh (torch's planner reads each rank's part of the single-rank checkpoint);
the others are loaded whole on each rank. Rank r writes its local tensors and the
non-tensor values it loaded to `OUT/rank<r>.pt`.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.metadata import TensorStorageMetadata
from torch.distributed.checkpoint.state_dict_loader import load
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard, zeros

WORLD = 2


def _rank(rank: int, checkpoint: str, out: str, port: int) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    try:
        mesh = init_device_mesh("cpu", (WORLD,))
        metadata = FileSystemReader(checkpoint).read_metadata()
        state: dict[str, Any] = {}
        for key, entry in metadata.state_dict_metadata.items():
            if not isinstance(entry, TensorStorageMetadata):
                state[key] = None
            elif len(entry.size) and entry.size[0] >= WORLD:
                state[key] = zeros(
                    entry.size,
                    dtype=entry.properties.dtype,
                    device_mesh=mesh,
                    placements=[Shard(0)],
                )
            else:
                state[key] = torch.zeros(entry.size, dtype=entry.properties.dtype)
        load(state, checkpoint_id=checkpoint)
        local = {
            key: value.to_local() if hasattr(value, "to_local") else value
            for key, value in state.items()
        }
        torch.save(local, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def main(checkpoint: str, out: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mp.spawn(_rank, args=(checkpoint, out, port), nprocs=WORLD, join=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
