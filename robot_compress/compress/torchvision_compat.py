"""Import torchvision 0.28.0 (pinned, installed with --no-deps) on the CPU build of torch 2.13.0.

The registry's torchvision wheel is a CUDA build: its C++ extension (_C.so) does not load against
CPU torch, and `import torchvision` then fails in _meta_registrations.py with "operator
torchvision::nms does not exist" because it registers fake kernels for ops that were never
defined. Defining the two op schemas first lets the import succeed. Only the detection ops
(nms, roi_align, ...) stay unavailable; the classifiers this project uses are pure Python.
"""

from __future__ import annotations

import functools

_keep_alive: list = []  # the Library object must outlive the import or its definitions vanish

_MISSING_OPS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)


@functools.cache
def import_torchvision():
    """The torchvision module, with the schema workaround applied only when it is needed."""
    import torch

    try:
        import torchvision
    except RuntimeError as exc:
        if "torchvision::nms" not in str(exc):
            raise
        library = torch.library.Library("torchvision", "DEF")
        for schema in _MISSING_OPS:
            library.define(schema)
        _keep_alive.append(library)
        import torchvision
    return torchvision


def schema_workaround_applied() -> bool:
    """Whether import_torchvision() had to define the missing op schemas (a CUDA build on CPU torch)."""
    return bool(_keep_alive)
