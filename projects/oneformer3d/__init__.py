"""OneFormer3D adapter: train OneFormer3D with the Influencer loss instead of Hungarian matching.

Importing this package (e.g. through ``custom_imports = dict(imports=['projects.oneformer3d'])``
in an mmengine config) registers :class:`OneFormer3DInfluencerCriterion` as
``OneFormer3DInfluencerCriterion`` in mmdet3d's ``MODELS`` registry when mmdet3d is importable. Without
mmdet3d the class is still usable directly; ``REGISTRATION_ERROR`` says why it is unregistered.
"""
from .criterion import OneFormer3DInfluencerCriterion
from . import registration
from .registration import REGISTERED_NAME, is_registered, register


def registration_error():
    """Why the import-time registration did not happen, or ``None`` when it did."""
    return registration.REGISTRATION_ERROR


__all__ = ["OneFormer3DInfluencerCriterion", "REGISTERED_NAME", "is_registered", "register",
           "registration_error"]
