import csv
import json

from conftest import compose_cfg, tiny_overrides
from vae_text.report import main, plot_rate_distortion, row_of
from vae_text.train import train


def test_report_tabulates_finished_and_unfinished_runs(corpus_dir, tmp_path, capsys):
    sweep = tmp_path / "sweep"
    for beta in (0.5, 1.0):
        train(compose_cfg(tiny_overrides(corpus_dir, f"objective.kl_weight={beta}",
                                         "train.max_steps=4", "eval.iw_samples=3")),
              sweep / f"objective.kl_weight={beta}")
    broken = sweep / "objective.kl_weight=2.0"
    broken.mkdir()
    (broken / "config.yaml").write_text("seed: 0\n")
    assert main([str(sweep), "--out", str(tmp_path / "rep")]) == 0
    table = (tmp_path / "rep.md").read_text()
    err = capsys.readouterr().err
    assert "not finished" in table and "not finished" in err and "step cap" not in err
    rows = list(csv.DictReader((tmp_path / "rep.csv").open()))
    assert [r["run"] for r in rows] == [f"objective.kl_weight={b}" for b in ("0.5", "1.0", "2.0")]
    for r in rows[:2]:
        expected = json.loads((sweep / r["run"] / "eval_test.json").read_text())
        for key in ("rec", "kl", "neg_elbo", "nll_iw", "mi", "au"):
            assert float(r[key]) == expected[key], key
    assert rows[2]["rec"] == ""
    assert [r["status"] for r in rows[:2]] == ["done (step cap)"] * 2  # what ended training
    assert [r["beta"] for r in rows] == ["0.5", "1.0", ""]
    for name in ("rep_rate_distortion.png", "rep_curves.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        import matplotlib.image

        assert matplotlib.image.imread(tmp_path / name).shape[2] in (3, 4)
    # every finished run is a point on the figure (whatever ended its training), the broken one not
    finished = [row_of(sweep / r["run"], sweep) for r in rows]
    assert sorted(plot_rate_distortion(finished, tmp_path / "rd.png")) == ["β=0.5", "β=1"]


def test_report_bad_directory(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err
