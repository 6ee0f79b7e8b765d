"""`phi1 ablation CONFIG`: arguments and dispatch (the work is in `phi1.ablation.run`)."""

from __future__ import annotations

import argparse
from typing import Any

HELP = ("the paper's Figure 2.1 in miniature: the same model at the same token budget on unfiltered vs filtered "
        "(vs + synthetic) data, finetuned alike, over several seeds; a table of the spread per arm")


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("ablation", help=HELP, description=HELP + ". Shared stages run once and are linked into "
                       "every run; re-running resumes or does nothing. Results: <run.root>/<run.name>/ablation.json "
                       "and ablation.html.")
    p.add_argument("config", help="run config with an [ablation] section, e.g. configs/ablation.toml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set ablation.seeds=[0,1] --set pretrain.max_steps=50")
    return p


def run_command(args: argparse.Namespace) -> int:
    from phi1.ablation.run import run_ablation
    from phi1.config import load_config

    run_ablation(load_config(args.config, args.overrides))
    return 0
