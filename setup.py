"""InfluencerFormer: matching-free training of query-based segmentation models."""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
version = {}
exec((ROOT / "influencerformer" / "__init__.py").read_text().split('"""', 2)[2], version)

setup(
    name="influencerformer",
    version=version["__version__"],
    description="Influencer Loss: a matching-free criterion for Mask2Former and OneFormer3D",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8") if (ROOT / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    # projects/ (detectron2 and mmengine adapters, the synthetic data generators) installs as
    # influencerformer_projects: "projects" is too generic a top-level name to claim. From a
    # checkout it is still imported as projects.* (configs, tools/, mmengine custom_imports).
    packages=find_packages(include=["influencerformer", "influencerformer.*"])
    + [f"influencerformer_projects{p[len('projects'):]}" for p in find_packages(include=["projects", "projects.*"])],
    package_dir={"influencerformer_projects": "projects"},
    install_requires=["torch>=2.0", "numpy", "scipy"],
    extras_require={
        # setuptools: tests/test_packaging.py builds the wheel without build isolation
        "dev": ["pytest>=7", "matplotlib", "pycocotools", "setuptools>=70.1"],
        # detectron2 is not on the package registry: it installs from its official source.
        "d2": ["detectron2 @ git+https://github.com/facebookresearch/detectron2.git",
               "pycocotools", "fvcore", "opencv-python", "matplotlib"],
        # OneFormer3D's CUDA stack (mmcv with ops, spconv) is documented in docs/oneformer3d.md.
        "3d": ["mmengine>=0.10", "mmdet>=3.0", "mmdet3d>=1.1"],
    },
    classifiers=["Programming Language :: Python :: 3", "Topic :: Scientific/Engineering :: Image Recognition"],
)
