"""research/loss_table.py and research/loss_landscape.py: each writes its table or grid."""
import json

from research import loss_table


def test_loss_table_marks_the_originals_failures(tmp_path, capsys):
    table = loss_table.main(["--instances", "3", "--queries", "6", "--json", str(tmp_path / "t.json")])
    text = capsys.readouterr().out
    assert "one duplicate | " in text and "⚠ ≤ ideal" in text.split("one duplicate")[1].split("|")[1]
    assert min(table, key=lambda name: table[name]["exclusive"]) == "ideal"
    assert json.loads((tmp_path / "t.json").read_text()) == table


def test_loss_landscape_writes_its_grid_and_the_torch_build(tmp_path, capsys):
    """Whether a symmetric start ends one-to-one can depend on the torch build's rounding
    (docs/loss.md, "The merge trap"), so the JSON records it next to the grid."""
    import torch

    from research import loss_landscape

    out = tmp_path / "landscape.json"
    results = loss_landscape.main(["--seeds", "1", "--steps", "5", "--variant", "sinkhorn_iters=0", "--json", str(out)])
    saved = json.loads(out.read_text())
    assert saved["machine"]["torch"] == torch.__version__ and saved["steps"] == 5
    assert set(saved["results"]) == {"defaults", "sinkhorn_iters=0"} == set(results)
    for rows in saved["results"].values():
        assert [(r["K"], r["Q"]) for r in rows] == [(k, q) for k in (1, 5, 20) for q in sorted({k, 2 * k, 100})]
        assert all(0 <= r["random"] <= 1 and 0 <= r["symmetric"] <= 1 for r in rows)
    assert "| defaults | all |" in capsys.readouterr().out


