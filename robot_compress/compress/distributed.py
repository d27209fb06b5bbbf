"""Training on several processes under torchrun: one process group for the whole run.

`robot-compress compress` is launched either as one process or by torchrun
(`torchrun --nproc_per_node N -m robot_compress.cli compress ...`), which sets WORLD_SIZE, RANK,
LOCAL_RANK, MASTER_ADDR and MASTER_PORT. With WORLD_SIZE > 1 every process runs the same recipe:
the torch stages run everywhere, and the training loops split each step's global batch across the
processes; rank 0 alone measures, exports, writes files and decides (best epoch, finished stages),
and sends its answers to the others. Every function here is a no-op with one process, so the
training loops have a single code path.

Why the result equals a one-process run with the same seed: every rank draws the same permutation
and the same augmentation for the whole global batch and then takes its own contiguous slice; the
local loss is scaled by the slice's share (a detector's by its share of the batch's soft object
count) so that DistributedDataParallel's gradient average is the gradient of the global batch's
loss; and batch norm uses the statistics of the global
batch (GlobalBatchNorm below). What remains is float summation order (see tests/compress/test_distributed.py).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

# Rank 0 measures and exports stages alone while the others wait in a collective; a detector's
# mAP evaluation takes minutes on a CPU, so the default 30-minute limit is too tight.
TIMEOUT = datetime.timedelta(hours=4)
ENVIRONMENT = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(RuntimeError):
    """WORLD_SIZE asks for several processes but their process group cannot start."""


def requested() -> int:
    """The process count the launcher asked for (1 without torchrun)."""
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(value)
    except ValueError:
        raise DistributedError(f"WORLD_SIZE={value!r} is not a whole number of processes") from None


def backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def start() -> None:
    """Join the process group when launched with WORLD_SIZE > 1 (NCCL on GPUs, gloo on CPUs)."""
    processes = requested()
    if processes <= 1 or active():
        return
    launch = f"launch with `torchrun --nproc_per_node {processes} -m robot_compress.cli compress RECIPE --out DIR`"
    missing = [name for name in ENVIRONMENT if name not in os.environ]
    if missing:
        raise DistributedError(f"WORLD_SIZE={processes} asks for {processes} training processes, but "
                               f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set; {launch}")
    name = backend()
    if not dist.is_available() or not dist.is_backend_available(name):
        raise DistributedError(f"WORLD_SIZE={processes}: this torch build has no {name} backend for "
                               f"torch.distributed; run one process (unset WORLD_SIZE)")
    if name == "nccl":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    try:
        dist.init_process_group(name, timeout=TIMEOUT)
    except Exception as exc:  # the store or the backend: the message says which
        raise DistributedError(f"the {name} process group of {processes} processes could not start (rank "
                               f"{os.environ['RANK']}, MASTER_ADDR={os.environ['MASTER_ADDR']}, MASTER_PORT="
                               f"{os.environ['MASTER_PORT']}): {exc}; {launch}") from exc


# How long a rank waits at the end for the others before tearing the group down anyway: a rank
# that failed outside a collective never arrives, and its error must not turn into a hang.
STOP_TIMEOUT = datetime.timedelta(seconds=60)


def stop() -> None:
    """Leave the process group: meet the other ranks first, then destroy it.

    Without the meeting, the first rank to finish can tear gloo down while a peer's transport thread
    still talks to it, and the process aborts at exit ("terminate called without an active
    exception") after its work is done. The meeting is best effort: a missing peer only costs the wait.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        if active():
            if backend() == "gloo":
                dist.monitored_barrier(timeout=STOP_TIMEOUT)
            else:
                dist.barrier()
    except Exception:
        pass  # a peer that failed: its own error is what the user reads
    finally:
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    """Rank 0: the process that measures, exports and writes files."""
    return rank() == 0


def device() -> torch.device:
    """This process's device: its own GPU under torchrun (LOCAL_RANK), else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) if active() else 0)


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast(value: Any) -> Any:
    """Rank 0's `value` on every rank (pickled; tensors keep rank 0's device, so send CPU ones)."""
    if not active():
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(function: Callable[..., Any], *args: Any) -> Any:
    """`function(*args)` run on rank 0 only, its result (or its exception, raised again) on every rank."""
    if not active():
        return function(*args)
    outcome = None
    if is_main():
        try:
            outcome = (True, function(*args))
        except Exception as exc:  # every rank must leave the collective, then all raise it
            outcome = (False, exc)
    ok, value = broadcast(outcome)
    if not ok:
        raise value
    return value


def all_sum(value: float) -> float:
    """The sum of a float over all ranks (per-rank loss totals -> the global batch's)."""
    if not active():
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=device() if backend() == "nccl" else "cpu")
    dist.all_reduce(tensor)
    return float(tensor)


def shard(count: int, ranks: int | None = None, index: int | None = None) -> slice:
    """This rank's contiguous slice of a global batch of `count` items: sizes differ by at most one,
    the first ranks take the larger shares, and the slices cover the batch in order."""
    ranks = world_size() if ranks is None else ranks
    index = rank() if index is None else index
    return slice(count * index // ranks, count * (index + 1) // ranks)


def loss_weight(local: int, total: int, ranks: int | None = None) -> float:
    """The factor on a slice's mean loss that makes DDP's gradient average equal the gradient of the
    global batch's mean loss (slices of unequal size carry proportionally more)."""
    return local * (world_size() if ranks is None else ranks) / total


def normaliser_weight(local: float) -> float:
    """The factor on a slice's loss that is divided by the slice's own total (clamped at 1, like the
    detector's soft object count) so that DDP's gradient average is that of the global batch's
    loss divided by the global total: slices with more objects carry more."""
    if not active():
        return 1.0
    return world_size() * max(local, 1.0) / max(all_sum(local), 1.0)


class _AllReduceSum(torch.autograd.Function):
    """A differentiable all-reduce: each rank's statistics feed every rank's loss, so the gradient
    w.r.t. them is the sum of every rank's gradient."""

    @staticmethod
    def forward(ctx, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class GlobalBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are those of the global batch (all ranks' slices).

    torch.nn.SyncBatchNorm does this only for GPU tensors (torch 2.13 raises "SyncBatchNorm expected
    input tensor to be on GPU" on the CPU), so gloo runs need their own. Two all-reduces: the sum
    and count, then the sum of squared deviations from the global mean (the one-pass E[x^2]-E[x]^2
    loses precision). A subclass of BatchNorm2d, so code that finds batch norms still finds it;
    eval mode is BatchNorm2d's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and active()):
            return super().forward(x)
        channels = x.shape[1]
        values = x.float()
        count = values.new_tensor([values.numel() // channels])
        total = _AllReduceSum.apply(torch.cat([values.sum((0, 2, 3)), count]))
        n = total[-1].detach()
        mean = total[:channels] / n
        centred = values - mean.view(1, -1, 1, 1)
        var = _AllReduceSum.apply((centred * centred).sum((0, 2, 3))) / n
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
            with torch.no_grad():
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(var.detach() * n / torch.clamp(n - 1, min=1), alpha=factor)
        out = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            out = out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return out.to(x.dtype)


def _swap_batchnorms(module: nn.Module, cls: type[nn.BatchNorm2d], source: type[nn.BatchNorm2d]) -> None:
    """Replace every `source` batch norm (exact type) by a `cls` sharing its parameters and buffers."""
    for name, child in module.named_children():
        if type(child) is source:
            swapped = cls(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            swapped.weight, swapped.bias = child.weight, child.bias
            for buffer in ("running_mean", "running_var", "num_batches_tracked"):
                setattr(swapped, buffer, getattr(child, buffer))
            swapped.train(child.training)
            setattr(module, name, swapped)
        else:
            _swap_batchnorms(child, cls, source)


class Trainable(nn.Module):
    """What DDP wraps: the model plus the extra trained modules (feature adapters), so their
    gradients are averaged too, and the forward the loop needs (the detector's raw head)."""

    def __init__(self, model: nn.Module, extras: list[nn.Module | None],
                 forward: Callable[[nn.Module, torch.Tensor], Any] | None):
        super().__init__()
        self.model = model
        self.extras = nn.ModuleList(extra for extra in extras if extra is not None)
        self._forward = forward

    def forward(self, x: torch.Tensor) -> Any:
        return self.model(x) if self._forward is None else self._forward(self.model, x)


def wrap(model: nn.Module, extras: list[nn.Module | None] = (),
         forward: Callable[[nn.Module, torch.Tensor], Any] | None = None) -> nn.Module:
    """The module a training step calls: `forward(model, x)` (default `model(x)`). With several
    processes its batch norms become GlobalBatchNorm (in place) and it is wrapped in DDP, which
    averages the gradients of `model` and `extras`. Call unwrap(model) after training."""
    trainable = Trainable(model, list(extras), forward)
    if not active():
        return trainable
    _swap_batchnorms(model, GlobalBatchNorm, nn.BatchNorm2d)
    for parameter in model.parameters():  # weights converted from ONNX can be strided views; DDP's
        parameter.data = parameter.data.contiguous()  # gradient buckets want the contiguous layout
    dev = device()
    return nn.parallel.DistributedDataParallel(trainable, device_ids=[dev] if dev.type == "cuda" else None)


def unwrap(model: nn.Module) -> nn.Module:
    """`model` with plain BatchNorm2d layers again (what export and the later stages expect)."""
    _swap_batchnorms(model, nn.BatchNorm2d, GlobalBatchNorm)
    return model
