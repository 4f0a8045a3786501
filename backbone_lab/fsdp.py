"""`FSDP2Strategy`: fully sharded data parallelism over every rank, for `trainer=fsdp`.

Lightning's `ModelParallelStrategy` (FSDP2 + tensor parallelism) sizes its data-parallel group
by the number of *nodes* unless told otherwise; here every rank is one data-parallel replica
(tensor-parallel size 1), so the sampler's rank/world split (`data.examples.ResumableSampler`)
and gradient averaging are those of DDP while parameters, gradients and optimizer state are
sharded. The module shards itself in `BackboneLitModule.configure_model` (each block, then the
root, on dim 0); each rank writes the trajectory slice it owns. Checkpoints are gathered into one
file on rank 0's CPU (`save_distributed_checkpoint=False`), which our resume, `init_from` and
offline tools read; pass `save_distributed_checkpoint=true` for models too large for that.
"""

from __future__ import annotations

from lightning.pytorch.strategies import ModelParallelStrategy


class FSDP2Strategy(ModelParallelStrategy):
    def __init__(self, save_distributed_checkpoint: bool = False, **kwargs):
        super().__init__(data_parallel_size="auto", tensor_parallel_size=1,
                         save_distributed_checkpoint=save_distributed_checkpoint, **kwargs)

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes  # every rank: one replica
        super().setup_environment()
