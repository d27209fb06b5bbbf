"""Detection distillation training: the student learns the teacher's raw head at the same
(augmented) input, with the loss of compress/detection/distill_loss.py; optional feature
imitation: MSE between the neck outputs (student through a 1x1 adapter per level, since pruning
narrows them) and the teacher's, weighted by `feature_weight`. With `alpha` below 1 the stage
mixes in YOLOX's label loss (compress/detection/objective.py).
"""

from __future__ import annotations

import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from robot_compress.compress import distributed
from robot_compress.compress.detection.distill_loss import (  # noqa: F401  (benchmarks and tests import them from here)
    BOX_WEIGHT,
    distill_loss,
    head_outputs,
    to_input,
    validation_loss,
)
from robot_compress.compress.detection.objective import (
    check_labels,
    describe,
    held_out_losses,
    training_batch,
    training_loss,
    uses_teacher,
)
from robot_compress.compress.recipe import TrainConfig
from robot_compress.compress.train import (
    autocast,
    device,
    load_checkpoint,
    make_optimizer,
    save_checkpoint,
    train_mode,
)

RECALIBRATION_IMAGES = 96  # letterboxed training images that set the batch-norm statistics


def neck_channels(model: nn.Module, size: int = 64) -> list[int]:
    with torch.no_grad():
        return [f.shape[1] for f in model.eval().backbone(torch.zeros(1, 3, size, size))]


def recalibrate_batchnorm(model: nn.Module, images: torch.Tensor, batch: int = 16) -> None:
    """Re-estimate every batch norm's running statistics on training images (the model is left in
    eval mode), after pruning and after each training epoch.

    After pruning: YOLOX-nano's folded batch norms leave channels with small weights but large
    constant outputs; magnitude importance removes them first, which shifts every later layer's
    statistics (a 2% channel cut moves boxes by cells). Fresh statistics from the pruned network
    remove that shift: on held-out coco/train images the distillation loss of a 50% cut falls from
    27.2 to 21.9 (a copy of the teacher: 2.8); folding the removed channels' mean activations into
    their consumers reached 24.8.
    After an epoch: with YOLOX's batch-norm momentum (0.03) the running statistics trail weights
    that a short, fast fine-tuning moves, and the eval-mode network can be far off the trained one.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average over the batches below
    model.train()
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch):
                model(images[start:start + batch])
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        model.eval()


def train_detector(model: nn.Module, config: TrainConfig, splits, teacher: nn.Module, seed: int, batch_size: int,
                   augment_images: bool = True, checkpoint: Path | None = None,
                   label: str = "distill") -> tuple[nn.Module, list[dict]]:
    """Train `model` for config.epochs (the classifier loop's optimizer and cosine schedule) on
    alpha x distillation from `teacher` + (1 - alpha) x the YOLOX label loss; keeps the epoch with
    the lowest held-out loss (objective.py says which)."""
    check_labels(config, splits.train)
    dev = device()
    size = splits.spec.input_size[0]
    model, teacher = model.to(dev), teacher.to(dev).eval()
    adapters = None
    if config.feature_weight > 0:
        adapters = nn.ModuleList(nn.Conv2d(s, t, 1) for s, t in zip(neck_channels(model), neck_channels(teacher),
                                                                     strict=True)).to(dev)
    net = distributed.wrap(model, [adapters], head_outputs)  # torchrun: DDP over each rank's slice
    trainable = [p for p in model.parameters() if p.requires_grad] + (list(adapters.parameters()) if adapters else [])
    optimizer = make_optimizer(trainable, config)
    steps_per_epoch = max(1, len(splits.train) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, config.epochs * steps_per_epoch))
    val_images = splits.val.letterboxed(size)
    statistics_images = (to_input(splits.train.letterboxed(size, RECALIBRATION_IMAGES), dev)
                         if config.batchnorm == "train" else None)  # frozen: no epoch re-estimates them
    held = distributed.on_main(lambda: held_out_losses(model, teacher, splits.val, val_images, size))
    best_loss, best_state = held["val_selected"], copy.deepcopy(model.state_dict())
    start, history = 0, []
    modules = {"model": model, "optimizer": optimizer, "schedule": schedule, "adapters": adapters}
    if (state := load_checkpoint(checkpoint, dev, modules)) is not None:
        start, history, best_loss, best_state = (state["epoch"], state["history"], state["best_loss"],
                                                 state["best_state"])
        print(f"{label}: resuming after epoch {start}/{config.epochs} (best val loss {best_loss:.4f})")
    print(f"{label}: {len(splits.train)} training images, {steps_per_epoch} steps of {batch_size} per epoch, "
          f"held-out losses before: {describe(held)}; best epoch by the {held['selected_by']} loss", flush=True)
    for epoch in range(start, config.epochs):
        rng = np.random.default_rng(seed * 1000 + epoch)
        order = rng.permutation(len(splits.train))
        train_mode(model, config.batchnorm)
        t0, total, parts_total = time.time(), 0.0, {}
        for step in range(steps_per_epoch):
            indices = order[step * batch_size:(step + 1) * batch_size]
            batch, targets = training_batch(splits.train, indices, size, rng, augment_images, config)
            part = distributed.shard(len(batch))  # every rank drew the same global batch above
            share = len(batch[part]) / len(batch)
            x = to_input(batch[part], dev)
            targets = None if targets is None else targets[part]
            with autocast(config.precision, dev):
                with torch.no_grad():
                    t_feats, t_levels = head_outputs(teacher, x) if uses_teacher(config) else (None, [])
                s_feats, s_levels = net(x)
                loss, parts = training_loss(config, [tuple(t.float() for t in lv) for lv in s_levels],
                                            [tuple(t.float() for t in lv) for lv in t_levels], targets)
                if config.alpha == 1.0:
                    # torchrun: distill_loss divides by its slice's soft object count, the weight makes it the batch's
                    weight = distributed.normaliser_weight(sum(float(lv[1].float().sigmoid().sum()) for lv in t_levels))
                else:
                    # the label loss divides by its slice's positives: under torchrun weighted by the slice's
                    # share of images, an approximation of the global batch's normalisation
                    weight = share * distributed.world_size()
                weights = dict.fromkeys(parts, weight / distributed.world_size())
                scaled = loss * weight
                if adapters is not None:
                    feature = sum(F.mse_loss(a(s).float(), t.float()) for a, s, t in zip(adapters, s_feats, t_feats,
                                                                                        strict=True))
                    loss = loss + config.feature_weight * feature
                    scaled = scaled + config.feature_weight * feature * share * distributed.world_size()
                    parts["feature"], weights["feature"] = float(feature), share
            optimizer.zero_grad(set_to_none=True)
            scaled.backward()
            optimizer.step()
            schedule.step()
            total += float(scaled.detach()) / distributed.world_size()
            for key, value in parts.items():
                parts_total[key] = parts_total.get(key, 0.0) + value * weights[key]
        total, parts_total = distributed.all_sum(total), {k: distributed.all_sum(v) for k, v in parts_total.items()}
        if config.batchnorm == "train":
            recalibrate_batchnorm(model, statistics_images)
        held = distributed.on_main(lambda: held_out_losses(model, teacher, splits.val, val_images, size))
        val = held["val_selected"]
        entry = {"epoch": epoch + 1, "loss": total / steps_per_epoch, **held, "seconds": time.time() - t0,
                 **{f"loss_{k}": v / steps_per_epoch for k, v in parts_total.items()}}
        history.append(entry)
        print(f"{label} epoch {epoch + 1}/{config.epochs}: loss {entry['loss']:.4f}, held-out {describe(held)}, "
              f"{entry['seconds']:.0f} s",
              file=sys.stderr, flush=True)
        if val <= best_loss:
            best_loss, best_state = val, copy.deepcopy(model.state_dict())
        if checkpoint is not None:
            save_checkpoint(checkpoint, epoch + 1, modules,
                            {"history": history, "best_loss": best_loss, "best_state": best_state})
    model.load_state_dict(best_state)
    return distributed.unwrap(model).cpu().eval(), history
