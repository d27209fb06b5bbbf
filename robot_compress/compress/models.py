"""Build the networks a recipe names (its teacher, and its student when that is a different
network): CIFAR ResNet + checkpoint, a torchvision classifier (ImageNet weights downloaded on
demand), a model file saved with torch.save, or a YOLOX detector rebuilt from its ONNX export."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from robot_compress.compress.cifar_resnet import cifar_resnet, load_checkpoint
from robot_compress.compress.recipe import ModelSource, RecipeError


def build_model(config: ModelSource, role: str = "teacher") -> nn.Module:
    """The model in eval mode. Load problems become RecipeError naming `role` before any training."""
    try:
        if config.kind == "cifar_resnet":
            model = cifar_resnet(config.arch, config.num_classes)
            if config.checkpoint is not None:
                load_checkpoint(model, config.checkpoint)
        elif config.kind == "torchvision":
            model = torchvision_classifier(config.arch, config.pretrained, config.num_classes)
        elif config.kind == "yolox":
            from robot_compress.compress.detection.yolox import yolox_nano_from_onnx

            model = yolox_nano_from_onnx(config.checkpoint)
        else:
            model = load_model_file(config.path)
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise RecipeError(f"{role}: {exc}") from exc
    return model.eval()


def torchvision_classifier(name: str, pretrained: bool, num_classes: int) -> nn.Module:
    """A torchvision classifier; with `pretrained` its default ImageNet weights are downloaded to
    $TORCH_HOME (torch.hub's cache) once. A head for `num_classes` != 1000 is re-initialised."""
    from robot_compress.compress.torchvision_compat import import_torchvision

    models = import_torchvision().models
    weights = models.get_model_weights(name).DEFAULT if pretrained else None
    model = models.get_model(name, weights=weights)
    if num_classes != 1000:
        replace_head(model, num_classes)
    return model


def replace_head(model: nn.Module, num_classes: int) -> None:
    """Swap the last Linear layer for a fresh one with `num_classes` outputs."""
    parent, attr, last = None, None, None
    for module in model.modules():
        for child_name, child in module.named_children():
            if isinstance(child, nn.Linear):
                parent, attr, last = module, child_name, child
    if last is None:
        raise ValueError(f"{type(model).__name__} has no Linear classifier head to resize")
    setattr(parent, attr, nn.Linear(last.in_features, num_classes))


def load_model_file(path: str | Path) -> nn.Module:
    """A whole model saved with torch.save(model), or a TorchScript archive."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file {path} does not exist")
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError):
        pass
    try:
        model = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # pickle raises many types for a corrupt file
        raise ValueError(f"model file {path} could not be read (corrupt or not a torch.save file): {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ValueError(f"model file {path} holds a {type(model).__name__}, not a whole nn.Module "
                         f"(save the model with torch.save(model, path), not its state_dict)")
    return model
