"""Shared fixtures of the detectron2 tests.

Modules here that need detectron2 call ``pytest.importorskip("detectron2")`` at the top,
so they skip where it is not installed; this file imports nothing beyond pytest/stdlib.
"""
import os
import sys

import pytest

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if REPO_ROOT not in sys.path:
    sys.path.insert(0, REPO_ROOT)

# a small copy of the synthetic dataset, shared by the tests of one session
TINY_SPEC = dict(num_train=16, num_val=8, image_size=64, max_objects=4, seed=7)


def load_generator():
    """The synthetic dataset generator (needs numpy only)."""
    from projects.mask2former import synthetic_coco

    return synthetic_coco


@pytest.fixture(scope="session")
def tiny_synthetic_root(tmp_path_factory):
    """A generated tiny synthetic dataset (needs Pillow); returns its root folder."""
    pytest.importorskip("PIL")
    gen = load_generator()
    root = str(tmp_path_factory.mktemp("synthetic") / "synthetic_coco")
    gen.write_dataset(root, gen.SyntheticCocoSpec(**TINY_SPEC), progress=False)
    return root


@pytest.fixture
def synthetic_registered(tiny_synthetic_root, monkeypatch):
    """Registers synthetic_coco_{train,val} on the tiny dataset (and the env var for subprocesses)."""
    from projects.mask2former.data import register_synthetic_coco

    monkeypatch.setenv("INFLUENCERFORMER_SYNTHETIC_ROOT", tiny_synthetic_root)
    gen = load_generator()
    register_synthetic_coco(tiny_synthetic_root, gen.SyntheticCocoSpec(**TINY_SPEC))
    yield tiny_synthetic_root
    register_synthetic_coco()  # back to the default root
