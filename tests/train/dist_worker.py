"""One torchrun worker running `phi1 pretrain` for several configs in a row.

The process group is joined once here, so one launch (one interpreter start
per rank) serves several runs; `phi1.train.distributed` uses a group it
finds already initialised, exactly as under ``torchrun -m phi1.cli``.
"""

from __future__ import annotations

import sys

import torch.distributed as dist

from phi1.cli import main

if __name__ == "__main__":
    dist.init_process_group("gloo")
    try:
        for config in sys.argv[1:]:
            code = main(["pretrain", "--config", config])
            if code:
                sys.exit(code)
            dist.barrier()  # rank 0 renames the stage folder after the others return
    finally:
        dist.destroy_process_group()
