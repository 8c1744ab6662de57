"""The README is the first thing a user runs: its commands and its code must be true."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def test_the_core_api_example_runs():
    (code,) = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    assert set(namespace["losses"]) == {"loss_ce", "loss_mask", "loss_dice"}
    assert namespace["outputs"]["pred_masks"].grad is not None


def test_the_two_commands_are_the_ones_ci_runs():
    assert "python tools/train_net.py --config-file configs/synthetic/influencer.py" in README
    assert "python -m pytest tests -q" in README
    assert "python -m pytest tests -q" in (REPO / ".ci" / "run").read_text()


def test_product_first_and_short():
    lines = README.splitlines()
    assert len(lines) <= 150
    assert next(i for i, line in enumerate(lines) if line.startswith("## Install")) < 60
    assert not re.search(r"\bissue\b", README, flags=re.I)


def test_every_path_the_readme_names_exists():
    for path in set(re.findall(r"`((?:configs|tools|demo|docs|research|influencerformer)/[\w./-]+)`", README)):
        if "*" not in path and "{" not in path:
            assert (REPO / path).exists(), path
    for path in re.findall(r"\]\(((?:docs|research)/[\w./-]+?)(?:#[\w-]+)?\)", README):
        assert (REPO / path).exists(), path
