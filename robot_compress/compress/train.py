"""The one training loop: (distilled) fine-tuning with SGD or AdamW + cosine LR, best epoch by validation
accuracy, and a checkpoint after every epoch so an interrupted run resumes where it stopped."""

from __future__ import annotations

import contextlib
import copy
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from robot_compress.compress import distributed
from robot_compress.compress.data import Splits, augment, loader, normalize
from robot_compress.compress.recipe import TrainConfig


def device() -> torch.device:
    """The GPU when there is one (each torchrun process its own), else the CPU."""
    return distributed.device()


def autocast(precision: str, dev: torch.device):
    """The forward passes' precision context: bf16 autocast, or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(dev.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
            temperature: float, alpha: float) -> torch.Tensor:
    """Hinton et al. (2015): alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE."""
    hard = F.cross_entropy(student_logits, labels)
    if alpha == 0:
        return hard
    soft = F.kl_div(F.log_softmax(student_logits / temperature, dim=1),
                    F.log_softmax(teacher_logits / temperature, dim=1), reduction="batchmean", log_target=True)
    return alpha * temperature ** 2 * soft + (1 - alpha) * hard


class FeatureTap:
    """Captures the input of a model's last Linear layer (the penultimate features)."""

    def __init__(self, model: nn.Module):
        head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
        self.features: torch.Tensor | None = None
        self.dim = head.in_features
        self.handle = head.register_forward_pre_hook(self._hook)

    def _hook(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        self.features = inputs[0]

    def close(self) -> None:
        self.handle.remove()


@torch.no_grad()
def accuracy(model: nn.Module, data, spec, batch_size: int = 500) -> float:
    """Top-1 of a torch model on LabelledImages (validation during training; reports use ORT)."""
    model.eval()
    dev = next(model.parameters()).device
    correct = 0
    for images, labels in loader(data, batch_size, shuffle=False):
        correct += int((model(normalize(images, spec).to(dev)).argmax(1).cpu() == labels).sum())
    return correct / len(data)


def make_optimizer(parameters, config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(parameters, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0,
                           weight_decay=config.weight_decay)


def train_mode(model: nn.Module, batchnorm: str) -> None:
    """Put `model` in training mode; with batchnorm "frozen" its batch norms stay in eval mode.

    Why frozen: a student that starts as (a pruned copy of) its teacher computes what the teacher
    computes only with the running statistics; in train mode the batch statistics of augmented
    batches differ from them, so the first steps chase that difference instead of the teacher."""
    model.train()
    if batchnorm == "frozen":
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.eval()


def save_checkpoint(path: Path, epoch: int, modules: dict, extra: dict) -> None:
    """A run's state after `epoch`, written to a .tmp file and renamed, so an interrupt never
    leaves half a checkpoint. `modules`: name -> object with state_dict() (or None). Only rank 0
    writes: under torchrun every rank holds the same state."""
    if not distributed.is_main():
        return
    state = {"epoch": epoch, **{k: (m.state_dict() if m is not None else None) for k, m in modules.items()}, **extra}
    torch.save(state, path.with_suffix(".tmp"))
    path.with_suffix(".tmp").replace(path)


def load_checkpoint(path: Path | None, dev: torch.device, modules: dict) -> dict | None:
    """The saved state of an interrupted run, with `modules` (name -> object with
    load_state_dict(), or None) restored in place; None when there is no checkpoint. Under torchrun
    rank 0 reads the file and sends it to the others, so only rank 0 needs the work directory."""
    if path is None:
        return None
    location = torch.device("cpu") if distributed.active() else dev  # load_state_dict moves it
    state = distributed.on_main(lambda: torch.load(path, map_location=location, weights_only=False)
                                if path.is_file() else None)
    if state is None:
        return None
    for key, module in modules.items():
        if module is not None:
            module.load_state_dict(state[key])
    return state


def train(model: nn.Module, config: TrainConfig, splits: Splits, teacher: nn.Module | None, seed: int,
          batch_size: int, augment_images: bool = True, checkpoint: Path | None = None,
          label: str = "train") -> tuple[nn.Module, list[dict]]:
    """Train `model` for config.epochs; returns the best-validation model and per-epoch history.

    With `checkpoint`, state is saved after every epoch and picked up again if the file exists.
    The teacher runs only when alpha > 0 or feature_weight > 0 (plain fine-tuning skips it).
    Under torchrun each rank trains on its slice of every global batch (compress/distributed.py)."""
    dev = device()
    model = model.to(dev)
    use_teacher = teacher is not None and (config.alpha > 0 or config.feature_weight > 0)
    teacher = teacher.to(dev).eval() if use_teacher else None
    taps = (FeatureTap(model), FeatureTap(teacher)) if use_teacher and config.feature_weight > 0 else None
    adapter = nn.Linear(taps[0].dim, taps[1].dim).to(dev) if taps else None
    net = distributed.wrap(model, [adapter])
    trainable = [p for p in model.parameters() if p.requires_grad] + (list(adapter.parameters()) if adapter else [])
    optimizer = make_optimizer(trainable, config)
    steps_per_epoch = -(-len(splits.train) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, config.epochs * steps_per_epoch))
    start, history = 0, []
    best_acc = distributed.on_main(lambda: accuracy(model, splits.val, splits.spec))
    best_state = copy.deepcopy(model.state_dict())
    modules = {"model": model, "optimizer": optimizer, "schedule": schedule, "adapter": adapter}
    if (state := load_checkpoint(checkpoint, dev, modules)) is not None:
        start, history, best_acc, best_state = state["epoch"], state["history"], state["best_acc"], state["best_state"]
        print(f"{label}: resuming after epoch {start}/{config.epochs} (best val {best_acc:.2%})")
    generator = torch.Generator()
    for epoch in range(start, config.epochs):
        generator.manual_seed(seed * 1000 + epoch)
        train_mode(model, config.batchnorm)
        t0, total, seen = time.time(), 0.0, 0
        batches = tqdm(loader(splits.train, batch_size, shuffle=True, seed=seed * 1000 + epoch),
                       desc=f"{label} epoch {epoch + 1}/{config.epochs}", leave=False,
                       mininterval=1 if sys.stderr.isatty() else 60, file=sys.stderr,
                       disable=not distributed.is_main())
        for images, labels in batches:
            if augment_images:
                images = augment(images, generator)  # the whole global batch: the same draws on every rank
            if len(labels) < distributed.world_size():  # a rank would get no image
                continue
            part = distributed.shard(len(labels))
            weight = distributed.loss_weight(len(labels[part]), len(labels))
            x, y = normalize(images[part], splits.spec).to(dev), labels[part].to(dev)
            with autocast(config.precision, dev):
                logits = net(x).float()
                if use_teacher:
                    with torch.no_grad():
                        teacher_logits = teacher(x).float()
                    loss = kd_loss(logits, teacher_logits, y, config.temperature, config.alpha)
                    if taps:
                        loss = loss + config.feature_weight * F.mse_loss(adapter(taps[0].features).float(),
                                                                         taps[1].features.float())
                else:
                    loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            (loss * weight if weight != 1 else loss).backward()
            optimizer.step()
            schedule.step()
            total, seen = total + loss.item() * len(y), seen + len(y)
            batches.set_postfix(loss=f"{total / seen:.3f}", refresh=False)
        total, seen = distributed.all_sum(total), distributed.all_sum(seen)
        val = distributed.on_main(lambda: accuracy(model, splits.val, splits.spec))
        history.append({"epoch": epoch + 1, "loss": total / seen, "val_top1": val, "seconds": time.time() - t0})
        print(f"{label} epoch {epoch + 1}/{config.epochs}: loss {total / seen:.4f}, val top-1 {val:.2%}, "
              f"{time.time() - t0:.0f} s", flush=True)
        if val >= best_acc:
            best_acc, best_state = val, copy.deepcopy(model.state_dict())
        if checkpoint is not None:
            save_checkpoint(checkpoint, epoch + 1, modules,
                            {"history": history, "best_acc": best_acc, "best_state": best_state})
    if taps:
        for tap in taps:
            tap.close()
    model.load_state_dict(best_state)
    return distributed.unwrap(model).cpu().eval(), history
