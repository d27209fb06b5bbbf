"""`robot-compress compress RECIPE.yaml --out models/<name>`: run a compression recipe, in one
process or in several under torchrun (compress/distributed.py)."""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
from pathlib import Path

LAUNCH = """Several training processes (scale-out): launch the same command with torchrun, e.g.
  torchrun --nproc_per_node 2 -m robot_compress.cli compress RECIPE.yaml --out models/NAME
(or `torchrun --nproc_per_node 2 --no-python robot-compress compress ...`). Several machines: add
torchrun's --nnodes/--node_rank/--rdzv_endpoint; each needs the recipe's data, only rank 0 --work-dir.
Each process trains on its slice of every global batch (data.batch_size stays the global size, so
the result matches one process with the same seed); NCCL on GPUs, one GPU per process, gloo on
CPUs. Rank 0 alone measures, exports and writes --out and --work-dir; --resume works the same way.
--threads counts per process (torchrun's default is 1: OMP_NUM_THREADS=1).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from robot_compress.compress.recipe import reference

    parser.epilog = LAUNCH + "\n" + reference()
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("recipe", type=Path, help="recipe YAML (see recipes/)")
    parser.add_argument("--out", required=True, type=Path, help="model directory to write (models/<name>)")
    parser.add_argument("--work-dir", type=Path, help="stage artefacts, metrics and resume state "
                        "(default: runs/<out name>)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue an interrupted run in --work-dir")
    group.add_argument("--fresh", action="store_true", help="delete --work-dir first and start over")
    parser.add_argument("--threads", type=int, help="torch CPU threads, per process under torchrun "
                        "(default: torch's choice)")


def run(args: argparse.Namespace) -> int:
    import torch

    from robot_compress.compress import distributed
    from robot_compress.compress.channel_alignment import AlignmentMismatch
    from robot_compress.compress.pipeline import RunStateError, console, run_pipeline
    from robot_compress.compress.recipe import RecipeError
    from robot_compress.compress.report import score_text
    from robot_compress.compress.stages.export_onnx import ExportMismatch

    if args.threads:
        torch.set_num_threads(args.threads)
    work_dir = args.work_dir or Path("runs") / args.out.name
    try:
        distributed.start()
    except distributed.DistributedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not distributed.is_main():  # one log: rank 0's (errors still reach stderr from every rank)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
        console.quiet = True
    try:
        return _run(args, work_dir, run_pipeline, score_text)
    except (RecipeError, RunStateError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ExportMismatch, AlignmentMismatch) as exc:  # a stage made a file that does not compute its model
        print(f"error: {exc}\nThe stages before it are kept in {work_dir}.", file=sys.stderr)
        return 1
    finally:
        distributed.stop()


def _run(args: argparse.Namespace, work_dir: Path, run_pipeline, score_text) -> int:
    from robot_compress.compress import distributed
    from robot_compress.compress.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    if args.fresh and work_dir.exists() and distributed.is_main():
        shutil.rmtree(work_dir)
    command = "robot-compress " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["compress"] else \
        f"robot-compress compress {args.recipe} --out {args.out}"
    model_dir = run_pipeline(recipe, args.out, work_dir, resume=args.resume, command=command)
    if model_dir is not None:  # rank 0 (or the only process)
        print(f"wrote {model_dir.root}: {score_text(model_dir.manifest.metrics)}, "
              f"{model_dir.manifest.metrics['params']:,} parameters; report {model_dir.root / 'report.md'}")
    return 0
