"""Entry point of a launched rank: `python -m backbone_lab.worker <run>/config.yaml <checkpoint or ->`.

`distributed.launch_local_workers` starts ranks 1..W-1 with this command; each trains on the
resolved config rank 0 saved. It lives above both `train` and `distributed` (it imports the first,
the second names it only as a command), so neither imports the other.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import OmegaConf

from backbone_lab.distributed import start_heartbeat
from backbone_lab.preemption import Preempted


def worker_main(argv: list[str]) -> int:
    """Train on rank 0's saved config; the exit status of a preempted rank is 128 + the signal.
    The rank first starts its heartbeat to the launcher's watchdog (`distributed.start_heartbeat`)."""
    start_heartbeat()
    from backbone_lab.train import train  # after the heartbeat: the import alone can take many seconds

    config_path, ckpt = Path(argv[0]), argv[1]
    cfg = OmegaConf.load(config_path)
    try:
        train(cfg, ckpt_path=None if ckpt == "-" else Path(ckpt))
    except Preempted as err:  # rank 0 saved the checkpoint and writes the marker
        return 128 + err.signum
    return 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
