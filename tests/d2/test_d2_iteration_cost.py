"""tools/iteration_cost.py on the COCO R50 configs, tiny inputs, one iteration each."""
import json

import pytest

pytest.importorskip("detectron2")

from tools import iteration_cost  # noqa: E402


def test_phases_and_criterion_share(tmp_path):
    out = tmp_path / "cost.json"
    report = iteration_cost.main(["--size", "64", "--batch", "1", "--iters", "1", "--warmup", "0",
                                  "--device", "cpu", "--json", str(out)])
    assert json.loads(out.read_text())["results"].keys() == {"hungarian", "influencer"}
    for name, r in report["results"].items():
        assert all(r[p] > 0 for p in iteration_cost.PHASES), name
        assert r["total"] == pytest.approx(sum(r[p] for p in iteration_cost.PHASES))
        assert 0 < r["criterion_share"] < 1
        assert isinstance(r["criterion_ops"], int) and r["criterion_ops"] > 0
    assert report["machine"]["commit"] is None or isinstance(report["machine"]["commit"], str)


def test_missing_config_is_a_clear_error(capsys):
    with pytest.raises(SystemExit):
        iteration_cost.main(["--config-files", "configs/coco/nope.py"])
    assert "configs/coco/nope.py" in capsys.readouterr().err
