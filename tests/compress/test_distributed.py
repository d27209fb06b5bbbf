"""Training on two gloo processes gives the one-process result: the batch slicing, one step's
gradients and batch-norm statistics, the detector loss's normalisation, checkpoints that only rank 0 writes and reads, and the whole
`robot-compress compress` under torchrun writing one artefact."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from robot_compress.cli import main
from robot_compress.compress import distributed
from robot_compress.compress.cifar_resnet import cifar_resnet
from robot_compress.compress.train import load_checkpoint, save_checkpoint

TORCHRUN_ENV = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("count", [1, 2, 13, 64])
@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_slices_cover_the_global_batch_in_order_and_weights_restore_its_mean(count, ranks):
    if count < ranks:
        return
    slices = [distributed.shard(count, ranks, index) for index in range(ranks)]
    items = list(range(count))
    assert sum((items[part] for part in slices), []) == items
    sizes = [len(items[part]) for part in slices]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    losses = torch.rand(count, dtype=torch.float64)
    weighted = [losses[part].mean() * distributed.loss_weight(len(items[part]), count, ranks) for part in slices]
    assert float(sum(weighted) / ranks) == pytest.approx(float(losses.mean()), rel=1e-12)  # what DDP averages


def _batch():
    torch.manual_seed(0)
    return cifar_resnet("resnet20"), torch.randn(13, 3, 16, 16), torch.randint(0, 10, (13,))


def _step(model, x, y) -> tuple[dict, dict]:
    """One training step's gradients and batch-norm statistics, each rank on its slice of (x, y)."""
    net = distributed.wrap(model)
    model.train()
    part = distributed.shard(len(y))
    loss = F.cross_entropy(net(x[part]), y[part]) * distributed.loss_weight(len(y[part]), len(y))
    loss.backward()
    distributed.unwrap(model)
    return ({name: p.grad.clone() for name, p in model.named_parameters()},
            {name: b.clone() for name, b in model.named_buffers()})


def _worker(rank: int, port: int, directory: Path) -> None:
    os.environ.update(WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    distributed.start()
    try:
        grads, buffers = _step(*_batch())
        model = cifar_resnet("resnet20")
        save_checkpoint(directory / f"saved_by_{rank}.pt", 1, {"model": model}, {})
        # only rank 0 reads: rank 1 is given a path that does not exist and still gets the state
        source = directory / ("state.pt" if rank == 0 else "absent.pt")
        state = load_checkpoint(source, torch.device("cpu"), {"model": model})
        # a detector's loss divided by its slice's soft object count: 3.0 objects on rank 0, 0.5 on rank 1
        objects = (3.0, 0.5)[rank]
        torch.save({"grads": grads, "buffers": buffers, "epoch": state["epoch"], "model": model.state_dict(),
                    "normaliser_weight": distributed.normaliser_weight(objects)}, directory / f"result_{rank}.pt")
    finally:
        distributed.stop()


def test_a_step_on_two_processes_equals_one_process_and_only_rank_0_touches_checkpoints(tmp_path):
    expected_grads, expected_buffers = _step(*_batch())
    torch.manual_seed(1)
    saved = cifar_resnet("resnet20")
    save_checkpoint(tmp_path / "state.pt", 3, {"model": saved}, {})
    mp.spawn(_worker, args=(free_port(), tmp_path), nprocs=2)
    assert (tmp_path / "saved_by_0.pt").is_file() and not (tmp_path / "saved_by_1.pt").exists()
    # per-slice sums 6.0 and 1.0 over counts 3.0 and 0.5 (clamped at 1): the batch's loss is 7.0 / 3.5
    slice_losses = (6.0 / 3.0, 1.0 / 1.0)
    weights = [torch.load(tmp_path / f"result_{rank}.pt", weights_only=False)["normaliser_weight"] for rank in (0, 1)]
    assert sum(loss * weight for loss, weight in zip(slice_losses, weights, strict=True)) / 2 == pytest.approx(2.0)
    for rank in (0, 1):
        result = torch.load(tmp_path / f"result_{rank}.pt", weights_only=False)
        # 13 images: slices of 7 and 6, so the loss weights matter; float summation order is all that differs
        for name, grad in expected_grads.items():
            torch.testing.assert_close(result["grads"][name], grad, rtol=1e-4, atol=1e-5 * float(grad.abs().max()))
        for name, buffer in expected_buffers.items():  # global-batch statistics, not the slice's
            torch.testing.assert_close(result["buffers"][name], buffer, rtol=1e-4, atol=1e-6)
        assert result["epoch"] == 3
        for name, value in saved.state_dict().items():
            assert torch.equal(result["model"][name], value)


def test_world_size_without_torchrun_is_a_clear_error(tiny_recipe, tmp_path, monkeypatch, capsys):
    recipe, _ = tiny_recipe()
    for name in TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    code = main(["compress", str(recipe), "--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work")])
    error = capsys.readouterr().err
    assert code == 2
    assert "RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT are not set" in error
    assert "torchrun --nproc_per_node 2 -m robot_compress.cli compress" in error
    assert not (tmp_path / "out").exists() and not (tmp_path / "work").exists()


STAGES = [{"stage": "distill", "epochs": 2, "lr": 0.005, "feature_weight": 0.1}]


def _files(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


def _torchrun(recipe: Path, out: Path, work: Path, cwd: Path, *extra: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "robot_compress.cli",
               "compress", str(recipe), "--out", str(out), "--work-dir", str(work), "--threads", "1", *extra]
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    # the timeout is a safety net for a loaded machine, not a speed goal
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env, timeout=480)


def test_torchrun_trains_the_one_process_model_and_writes_one_artefact(tiny_recipe, tmp_path, monkeypatch):
    recipe, _ = tiny_recipe(STAGES)
    for name in TORCHRUN_ENV:
        monkeypatch.delenv(name, raising=False)
    assert main(["compress", str(recipe), "--out", str(tmp_path / "one" / "out"),
                 "--work-dir", str(tmp_path / "one" / "work")]) == 0
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    out, work = tmp_path / "two" / "out", tmp_path / "two" / "work"
    done = _torchrun(recipe, out, work, cwd)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("wrote ") == 1  # rank 1 prints nothing
    # one artefact, the same files as one process writes, and nothing anywhere else
    assert _files(tmp_path / "two") == _files(tmp_path / "one") and not any(cwd.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cwd", "one", "recipe.yaml", "two"]
    assert json.loads((work / "run.json").read_text())["processes"] == 2

    histories = [json.loads((root / "work" / "01_distill" / "metrics.json").read_text())["history"]
                 for root in (tmp_path / "one", tmp_path / "two")]
    for single, double in zip(*histories, strict=True):
        # float summation order differs (sliced batch, all-reduced gradients and statistics); over 14
        # steps that moves the mean loss by ~3e-5 of itself (AMD EPYC, torch 2.13)
        assert double["loss"] == pytest.approx(single["loss"], rel=1e-3)
    models = [torch.load(root / "work" / "01_distill" / "model.pt", weights_only=False).state_dict()
              for root in (tmp_path / "one", tmp_path / "two")]
    difference = torch.cat([(models[0][k] - models[1][k]).flatten() for k in models[0]
                            if models[0][k].is_floating_point()]).norm()
    size = torch.cat([v.flatten() for v in models[0].values() if v.is_floating_point()]).norm()
    assert float(difference / size) < 5e-3  # measured 5e-4

    # resume: the interrupted stage's last checkpoint is read by rank 0 and sent to rank 1
    trained = models[1]
    for name in ("metrics.json", "model.pt", "model.onnx"):
        (work / "01_distill" / name).unlink()
    done = _torchrun(recipe, out, work, cwd, "--resume")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "distill: resuming after epoch 2/2" in done.stdout
    resumed = torch.load(work / "01_distill" / "model.pt", weights_only=False).state_dict()
    assert all(torch.equal(resumed[k], trained[k]) for k in trained)
    assert _files(tmp_path / "two") == _files(tmp_path / "one") and not any(cwd.iterdir())
