"""InfluencerFormer's framework projects: the detectron2 Mask2Former project and the OneFormer3D
adapter, with their synthetic dataset generators.

Imported as ``projects`` from a checkout (the configs, ``tools/`` and mmengine's
``custom_imports`` use that name); installed by ``pip install .`` as ``influencerformer_projects``.
"""
import sys

_NAMES = ("projects", "influencerformer_projects")

# The same code under two names would register every model twice (detectron2 and mmengine
# registries then fail with a less helpful message): refuse the second name.
for _other in _NAMES:
    if _other != __name__ and getattr(sys.modules.get(_other), "IS_INFLUENCERFORMER_PROJECTS", False):
        raise ImportError(
            f"InfluencerFormer's projects package is already imported as {_other!r}; importing it again "
            f"as {__name__!r} would duplicate its modules. Use one name: 'projects' from a checkout "
            f"(with the checkout on sys.path), 'influencerformer_projects' from an installed package."
        )

IS_INFLUENCERFORMER_PROJECTS = True
