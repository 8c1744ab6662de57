"""Checks and setup that ``tools/train_net.py`` does before a run writes anything.

* :func:`check_override_keys` -- a ``key=value`` override must name a key of the config
  (detectron2's ``LazyConfig.apply_overrides`` would silently add a mistyped key);
* :func:`check_output_dir` -- a fresh run must not write into the folder of another run;
* :func:`atomic_write_text` / :class:`AtomicJSONWriter` -- files replaced in one step;
* :func:`choose_cpu_threads` -- torch's thread count on the CPU.

Needs neither detectron2 nor torch (the metrics writer is a detectron2 ``EventWriter`` when
detectron2 is installed).
"""

import difflib
import glob
import json
import os
from collections.abc import Mapping, Sequence
from typing import Iterable, List, Optional, Tuple

from ..atomic_files import atomic_write

try:
    from detectron2.utils.events import EventWriter as _EventWriter
except ImportError:  # the checks are usable (and tested) without detectron2
    _EventWriter = object

__all__ = [
    "OutputDirInUseError",
    "UnknownOverrideKeyError",
    "config_keys",
    "check_override_keys",
    "previous_run_files",
    "check_output_dir",
    "atomic_write_text",
    "AtomicJSONWriter",
    "available_cores",
    "choose_cpu_threads",
    "CPU_THREADS_ENV",
]

CPU_THREADS_ENV = "INFLUENCERFORMER_CPU_THREADS"


class UnknownOverrideKeyError(KeyError):
    def __str__(self):  # KeyError would print the message in quotes
        return str(self.args[0])


class OutputDirInUseError(RuntimeError):
    pass


# ----------------------------------------------------------------------------
# overrides
# ----------------------------------------------------------------------------
def _plain(cfg):
    """An omegaconf container as plain dicts/lists (interpolations unresolved)."""
    try:
        from omegaconf import OmegaConf
    except ImportError:
        return cfg
    if OmegaConf.is_config(cfg):
        return OmegaConf.to_container(cfg, resolve=False)
    return cfg


def config_keys(cfg) -> List[str]:
    """Every key of a nested config, dotted (``train.max_iter``, ``a.list.0``), parents included."""
    keys = []

    def walk(node, prefix):
        if isinstance(node, Mapping):
            items = ((str(k), v) for k, v in node.items())
        elif isinstance(node, Sequence) and not isinstance(node, (str, bytes)):
            items = ((str(i), v) for i, v in enumerate(node))
        else:
            return
        for key, value in items:
            dotted = f"{prefix}.{key}" if prefix else key
            keys.append(dotted)
            walk(value, dotted)

    walk(_plain(cfg), "")
    return keys


def _override_key(override: str) -> Tuple[str, bool]:
    """``(key, explicit_add)`` of a ``key=value`` override; ``+key=value`` adds a key on purpose."""
    if "=" not in override:
        raise ValueError(f"override {override!r} is not of the form key=value")
    key = override.split("=", 1)[0].strip()
    explicit_add = key.startswith("+")
    return key.lstrip("+"), explicit_add


def check_override_keys(cfg, overrides: Iterable[str]) -> None:
    """Raise :class:`UnknownOverrideKeyError` for the first override whose key is not in ``cfg``,
    naming the nearest existing key. ``+key=value`` (hydra's syntax for adding) is let through."""
    known = None
    for override in overrides:
        key, explicit_add = _override_key(override)
        if explicit_add:
            continue
        if known is None:
            known = set(config_keys(cfg))
        if key in known:
            continue
        nearest = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
        hint = f"did you mean {nearest[0]!r}?" if nearest else "no similar key exists."
        raise UnknownOverrideKeyError(
            f"override {override!r}: the config has no key {key!r}; {hint} "
            f"(to add a new key on purpose, write +{key}=...)"
        )


# ----------------------------------------------------------------------------
# the output folder
# ----------------------------------------------------------------------------
def previous_run_files(output_dir: str) -> List[str]:
    """Files in ``output_dir`` that belong to a training run: checkpoints and metrics."""
    found = [os.path.join(output_dir, n) for n in ("last_checkpoint", "metrics.json")]
    found += glob.glob(os.path.join(output_dir, "model_*.pth"))
    return sorted(p for p in found if os.path.isfile(p))


def check_output_dir(output_dir: str, resume: bool, overwrite: bool, eval_only: bool = False) -> List[str]:
    """Refuse a fresh training run into a folder that holds another run's checkpoint or metrics.

    Returns the files of the previous run (empty when there is none). ``resume`` continues
    that run, ``overwrite`` replaces it on purpose, ``eval_only`` writes neither checkpoints
    nor metrics.json; all three are let through.
    """
    previous = previous_run_files(output_dir)
    if previous and not (resume or overwrite or eval_only):
        shown = ", ".join(os.path.basename(p) for p in previous[:5]) + (" ..." if len(previous) > 5 else "")
        raise OutputDirInUseError(
            f"output folder {output_dir!r} already holds another run ({shown}). Nothing was written. "
            f"To continue that run add --resume; to start a new one elsewhere add "
            f"train.output_dir=<another folder>; to replace it add --overwrite."
        )
    return previous


# ----------------------------------------------------------------------------
# atomic files
# ----------------------------------------------------------------------------
def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to a temporary file next to ``path``, then rename it over ``path``."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


class AtomicJSONWriter(_EventWriter):
    """detectron2's ``JSONWriter`` (one JSON line per logged iteration in ``metrics.json``),
    but the file is rewritten atomically at each write instead of appended to.

    On creation it keeps the lines of the file already there whose iteration is below
    ``start_iter`` (a resumed run drops what the interrupted run logged after its last
    checkpoint, so no iteration appears twice); ``start_iter=0`` starts an empty file.
    Call :meth:`set_start_iter` once the resumed iteration is known.
    """

    def __init__(self, json_file: str, window_size: int = 20, start_iter: int = 0):
        self._path = json_file
        self._window_size = window_size
        self._last_write = -1
        self._lines: List[str] = []
        self.set_start_iter(start_iter)

    def set_start_iter(self, start_iter: int) -> None:
        self._lines = []
        if start_iter > 0 and os.path.isfile(self._path):
            with open(self._path) as f:
                for line in f:
                    try:
                        if json.loads(line)["iteration"] < start_iter:
                            self._lines.append(line if line.endswith("\n") else line + "\n")
                    except (ValueError, KeyError, TypeError):
                        continue  # a torn line of an interrupted write: dropped

    def write(self):
        from detectron2.utils.events import get_event_storage

        storage = get_event_storage()
        to_save = {}
        for k, (v, itr) in storage.latest_with_smoothing_hint(self._window_size).items():
            if itr <= self._last_write:  # already written (same as detectron2's JSONWriter)
                continue
            to_save.setdefault(itr, {})[k] = v
        if not to_save:
            return
        self._last_write = max(to_save)
        for itr, scalars in sorted(to_save.items()):
            scalars["iteration"] = itr
            self._lines.append(json.dumps(scalars, sort_keys=True) + "\n")
        atomic_write_text(self._path, "".join(self._lines))

    def close(self):
        pass


# ----------------------------------------------------------------------------
# CPU threads
# ----------------------------------------------------------------------------
def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def choose_cpu_threads(
    num_workers: int, num_processes: int = 1, requested: Optional[int] = None, cores: Optional[int] = None
) -> Tuple[int, str]:
    """torch's intra-op thread count for one of ``num_processes`` CPU training processes.

    ``requested`` (the flag) wins, then ``$INFLUENCERFORMER_CPU_THREADS``, then
    ``$OMP_NUM_THREADS``; otherwise the cores left after the data-loader workers, shared
    between the processes (at least 1). Oversubscribing a CPU slows training by up to 10x.
    Returns ``(threads, why)``.
    """
    if requested is not None:
        return max(1, int(requested)), "--cpu-threads"
    for var in (CPU_THREADS_ENV, "OMP_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value:
            try:
                return max(1, int(value)), f"${var}"
            except ValueError:
                raise ValueError(f"${var}={value!r} is not a whole number of threads") from None
    cores = cores or available_cores()
    left = cores - num_processes * max(0, int(num_workers))
    threads = max(1, left // max(1, num_processes))
    return threads, (
        f"{cores} cores - {num_processes} process(es) x {num_workers} data-loader worker(s), "
        f"shared by {num_processes} process(es)"
    )
