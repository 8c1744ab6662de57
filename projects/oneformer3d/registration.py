"""Registration of the adapter in mmdet3d's ``MODELS`` registry.

Importing this module never fails because mmdet3d is missing: the core package and the adapter
class work without it, and :data:`REGISTRATION_ERROR` then says why nothing was registered.
"""
from __future__ import annotations

from typing import Any, Optional

from .criterion import OneFormer3DInfluencerCriterion

#: The ``type`` used in OneFormer3D configs.
REGISTERED_NAME = "OneFormer3DInfluencerCriterion"

#: Why the import-time registration did not happen (``None`` when it did).
REGISTRATION_ERROR: Optional[str] = None


def mmdet3d_models_registry() -> Any:
    """mmdet3d's ``MODELS`` registry. Raises ImportError when mmdet3d (or the mmcv / mmdet it
    checks on import) is not installed."""
    from mmdet3d.registry import MODELS

    return MODELS


def _qualified(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def register(registry: Any = None) -> Any:
    """Register :class:`OneFormer3DInfluencerCriterion` under its own name.

    Idempotent (also across a module reload). Another class already registered under that name
    is an error, not silently replaced. Returns the registry used.
    """
    if registry is None:
        registry = mmdet3d_models_registry()
    cls = OneFormer3DInfluencerCriterion
    existing = registry.module_dict.get(REGISTERED_NAME)
    if existing is cls:
        return registry
    reload = existing is not None and _qualified(existing) == _qualified(cls)
    if existing is not None and not reload:
        raise KeyError(f"{REGISTERED_NAME!r} is already registered in {registry.name!r} "
                       f"(scope {registry.scope!r}) by {_qualified(existing)}")
    registry.register_module(name=REGISTERED_NAME, module=cls, force=reload)
    return registry


def is_registered(registry: Any = None) -> bool:
    """True when ``registry`` (default: mmdet3d's MODELS) maps the name to the adapter.

    Reads the registry's own table, so it does not trigger mmdet3d's lazy import of
    ``mmdet3d.models`` (which needs mmcv's compiled ops).
    """
    if registry is None:
        try:
            registry = mmdet3d_models_registry()
        except ImportError:
            return False
    return registry.module_dict.get(REGISTERED_NAME) is OneFormer3DInfluencerCriterion


def _register_on_import() -> None:
    global REGISTRATION_ERROR
    try:
        registry = mmdet3d_models_registry()
    except ImportError as err:
        REGISTRATION_ERROR = f"mmdet3d is not importable ({type(err).__name__}: {err})"
        return
    register(registry)
    REGISTRATION_ERROR = None


_register_on_import()
