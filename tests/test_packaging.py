"""The package layout: projects/ is imported as ``projects`` from a checkout and installs as
``influencerformer_projects`` (never as the generic top-level name ``projects``)."""
import ast
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_projects_import_each_other_relatively():
    """An absolute ``projects.`` import inside projects/ would break under the installed name."""
    offenders = []
    for path in (REPO_ROOT / "projects").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            offenders += [f"{path.relative_to(REPO_ROOT)}:{node.lineno} {n}" for n in names
                          if n == "projects" or n.startswith("projects.")]
    assert not offenders


def test_generators_are_modules_of_the_checkout():
    from projects.mask2former import synthetic_coco
    from projects.oneformer3d import synthetic_s3dis

    assert callable(synthetic_coco.write_dataset) and callable(synthetic_s3dis.main)
    for script in ("synthetic_coco.py", "synthetic_s3dis.py"):  # the command lines still run
        proc = subprocess.run([sys.executable, str(REPO_ROOT / "datasets" / script), "--help"],
                              cwd="/", capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "--force" in proc.stdout, proc.stderr


def test_non_editable_install_has_its_own_top_level_name_and_generates_data(tmp_path):
    """Build the wheel from a copy of the sources, install it into a folder, import it from
    elsewhere: the synthetic generator runs without the checkout."""
    import importlib.util

    if importlib.util.find_spec("setuptools") is None or (
        importlib.util.find_spec("setuptools.command.bdist_wheel") is None and importlib.util.find_spec("wheel") is None
    ):
        pytest.skip("building a wheel without build isolation needs setuptools >= 70.1 (in the dev extra)")
    pytest.importorskip("PIL")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "README.md"):
        shutil.copy(REPO_ROOT / name, src / name)
    for name in ("influencerformer", "projects"):
        shutil.copytree(REPO_ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    proc = subprocess.run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (wheel,) = wheels.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert top_level == {"influencerformer", "influencerformer_projects"}
    assert "influencerformer_projects/mask2former/synthetic_coco.py" in names
    assert "influencerformer_projects/oneformer3d/synthetic_s3dis.py" in names

    target = tmp_path / "site"
    proc = subprocess.run(pip + ["install", "--no-deps", "--target", str(target), str(wheel)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    script = (
        "import importlib.util, sys\n"
        "from influencerformer_projects.mask2former import synthetic_coco as g\n"
        f"assert g.__file__.startswith({str(target)!r}), g.__file__\n"
        "root = g.write_dataset('data', g.SyntheticCocoSpec(num_train=2, num_val=1, image_size=32))\n"
        "assert g.is_complete(root)\n"
        "assert 'python -m influencerformer_projects.mask2former.synthetic_coco' in g.regenerate_command(root)\n"
        "import influencerformer_projects.oneformer3d as of3d\n"
        "assert of3d.OneFormer3DInfluencerCriterion is not None\n"
        "assert importlib.util.find_spec('projects') is None, 'projects must not be installed'\n"
        # the checkout's projects/ and the installed copy must not both load
        f"sys.path.insert(0, {str(REPO_ROOT)!r})\n"
        "try:\n"
        "    import projects\n"
        "except ImportError as e:\n"
        "    assert 'already imported as' in str(e), e\n"
        "else:\n"
        "    raise AssertionError('projects imported beside influencerformer_projects')\n"
    )
    env = dict(os.environ, PYTHONPATH=str(target))
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    proc = subprocess.run([sys.executable, "-c", script], cwd=run_dir, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
