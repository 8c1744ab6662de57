#!/usr/bin/env bash
# Installs what tests/oneformer3d needs into the current (CI) environment, from the package
# registry only, in well under a minute of pip work: mmengine, mmdet and mmdet3d, plus mmcv-lite --
# the pure-Python build of mmcv (same `mmcv` package and version checks, no compiled ops) -- so
# that nothing is compiled here. All four go in with --no-deps: their declared requirements pull
# in open3d, nuscenes-devkit, lyft-dataset-sdk, tensorboard, numba, matplotlib, pycocotools, ...,
# none of which the registry, config and criterion code paths under test import. The explicit
# list below is what those paths do import.
#
# Without mmcv's compiled ops `import mmdet3d.models` fails, and mmdet3d's registry imports it
# before its first build; tests/oneformer3d/of3d_helpers.py (mmdet3d_build_scope) explains how
# the tests still build through mmdet3d's real MODELS registry. Training OneFormer3D needs the
# full CUDA stack instead: docs/oneformer3d.md.
#
# Called by .ci/run after `pip install -e .[dev]`, with the CI virtualenv active.
set -euo pipefail
PY="${PYTHON:-python}"
PIP=("$PY" -m pip install --quiet --disable-pip-version-check)

"${PIP[@]}" --no-deps "mmengine==0.10.7" "mmcv-lite==2.1.0" "mmdet==3.3.0" "mmdet3d==1.4.0"
# Imported by mmengine (config, registry, structures, logging) and by mmcv's top-level package
# (cv2 for its image module, PIL, yapf). setuptools < 81 still ships pkg_resources, which mmengine
# uses to resolve "mmdet3d::" config references (torch 2.13 needs setuptools >= 77).
"${PIP[@]}" addict pyyaml rich termcolor yapf packaging pillow opencv-python-headless "setuptools>=77.0.3,<81"
echo "install_3d: pip's note that mmengine / mmcv-lite 'require opencv-python' is expected:" \
     "opencv-python-headless provides the same cv2 module without the GUI libraries."

"$PY" - <<'PYCHECK'
import mmcv, mmdet, mmdet3d, mmengine
from mmdet3d.registry import MODELS  # noqa: F401  (imports without mmcv's ops)
print(f"3D test stack: mmengine {mmengine.__version__}, mmcv(-lite) {mmcv.__version__}, "
      f"mmdet {mmdet.__version__}, mmdet3d {mmdet3d.__version__}")
PYCHECK
