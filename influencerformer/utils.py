"""Small helpers shared by the losses and criteria."""
from __future__ import annotations

import functools
from typing import Callable, TypeVar

import torch
from torch import Tensor

F = TypeVar("F", bound=Callable)


def float32_no_autocast(fn: F) -> F:
    """Run ``fn`` in float32 with autocast off; floating tensor arguments are upcast.

    Losses computed in fp16/bf16 overflow (``exp`` of claims, sums over 1e5 points); this keeps
    them in float32 whatever autocast region the caller is in.
    """

    def cast(value):
        if type(value) in (list, tuple):  # a sequence of per-problem tensors (not a NamedTuple)
            return [cast(v) for v in value]
        if isinstance(value, Tensor) and value.is_floating_point() and value.dtype != torch.float64:
            return value.float()
        return value

    def tensors(values):
        for value in values:
            if type(value) in (list, tuple):
                yield from tensors(value)
            elif isinstance(value, Tensor):
                yield value

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        args = [cast(a) for a in args]
        kwargs = {k: cast(v) for k, v in kwargs.items()}
        device_types = sorted({t.device.type for t in tensors(list(args) + list(kwargs.values()))} | {"cpu"})
        return _without_autocast(device_types, fn, args, kwargs)

    return wrapper  # type: ignore[return-value]


def _without_autocast(device_types, fn, args, kwargs):
    """``fn(*args, **kwargs)`` with autocast off on every device type (plain ``with`` blocks, which
    ``torch.compile`` traces)."""
    if not device_types:
        return fn(*args, **kwargs)
    with torch.autocast(device_type=device_types[0], enabled=False):
        return _without_autocast(device_types[1:], fn, args, kwargs)


def is_dist_initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def reduce_mean_over_workers(value: Tensor) -> Tensor:
    """Average a scalar tensor over ``torch.distributed`` workers (identity when not initialised)."""
    if is_dist_initialized():
        value = value.clone()
        torch.distributed.all_reduce(value)
        value = value / torch.distributed.get_world_size()
    return value
