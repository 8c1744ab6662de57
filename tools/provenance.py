"""Where a measurement comes from: commit, date, machine (shared by the tools that write JSON)."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
from pathlib import Path
from typing import Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parents[1]


def git_commit() -> Optional[str]:
    """Short HEAD commit, with ``+dirty`` when tracked files are modified; None outside git. The
    ``INFLUENCERFORMER_COMMIT`` environment variable overrides it (a copy of the tree measured on
    another machine, whose git metadata, if any, is not the commit's)."""
    if os.environ.get("INFLUENCERFORMER_COMMIT"):
        return os.environ["INFLUENCERFORMER_COMMIT"]
    if not (REPO_ROOT / ".git").exists():
        return None
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info(devices: Sequence = ()) -> dict:
    """Date, commit, library versions, CPU and (when a CUDA device is used) GPU."""
    import torch

    info = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "commit": git_commit(), "torch": torch.__version__, "python": platform.python_version(),
            "host": platform.node(), "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if any(getattr(d, "type", str(d)).startswith("cuda") for d in devices):
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write_text_atomic(path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename: a reader never sees a
    half-written file, and an interrupted write leaves the previous version intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def write_json(path, obj) -> Path:
    """:func:`write_text_atomic` of ``obj`` as indented JSON."""
    import json

    return write_text_atomic(path, json.dumps(obj, indent=2))
