import csv
import json
import shutil

from conftest import compose_cfg, tiny_overrides
from vae_text.report import main, overrides_of, plot_rate_distortion, read_metrics, row_of
from vae_text.reports.figures import plot_validation, validation_nll
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
    assert main([str(sweep), "--out", str(tmp_path / "rep"), "--mark", "objective.kl_weight=0.5=60.5"]) == 0
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
    for name in ("rep_rate_distortion.png", "rep_curves.png", "rep_validation.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
        import matplotlib.image

        assert matplotlib.image.imread(tmp_path / name).shape[2] in (3, 4)
    # every finished run is a point on the figure (whatever ended its training), the broken one not
    finished = [row_of(sweep / r["run"], sweep) for r in rows]
    assert sorted(plot_rate_distortion(finished, tmp_path / "rd.png")) == ["β=0.5", "β=1"]
    curves = [validation_nll(read_metrics(r["path"] / "metrics.jsonl")) for r in finished]
    assert plot_validation(finished, curves, tmp_path / "v.png") == [r["run"] for r in rows[:2]]
    assert plot_validation(finished[2:], curves[2:], tmp_path / "none.png") == []
    assert not (tmp_path / "none.png").exists()


def test_overrides_name_the_recipe_not_the_restarts(tmp_path):
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text(
        "- +experiment=ptb_bn\n- data.dir=/data/ptb\n- train.num_threads=1\n"
        "- train.resume=outputs/gen/ptb_bn\n- hydra.run.dir=outputs/gen/ptb_bn\n")
    assert overrides_of(tmp_path) == "+experiment=ptb_bn train.num_threads=1"
    assert overrides_of(tmp_path / "elsewhere") == ""


def test_validation_nll_per_epoch():
    lm = [{"step": 10, "epoch": 1, "train/rec": 9.0},
          {"step": 20, "epoch": 1, "val/nll": 120.5, "val/neg_elbo": 120.5},
          {"step": 40, "epoch": 2, "val/nll": 110.25},
          {"step": 40, "epoch": 2, "val/nll": 110.0},  # a resumed run's repeated epoch: the last counts
          {"step": 60, "epoch": 3, "val/nll": 108.0}]
    assert validation_nll(lm) == ([1, 2, 3], [120.5, 110.0, 108.0], "NLL (exact)")
    vae = [{"step": 5, "epoch": 1, "val/neg_elbo": 130.0, "val/rec": 125.0},
           {"step": 9, "epoch": 2, "val/neg_elbo": 118.5}]
    assert validation_nll(vae) == ([1, 2], [130.0, 118.5], "-ELBO")
    assert validation_nll([]) == ([], [], "-ELBO")


def test_report_bad_mark(tiny_run, tmp_path, capsys):
    shutil.copytree(tiny_run, tmp_path / "runs" / "a")
    assert main([str(tmp_path / "runs"), "--mark", "b=100"]) == 2
    assert "no run named 'b'; runs: a" in capsys.readouterr().err
    assert main([str(tmp_path / "runs"), "--mark", "a=lots"]) == 2
    assert "give RUN=NATS" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "report.md").exists()  # nothing written on a bad argument


def test_report_bad_directory(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_a_resume_in_progress_is_not_listed_as_a_run(tmp_path):
    from vae_text.report import find_runs
    from vae_text.run.record import STAGING

    sweep = tmp_path / "sweep"
    for job in ("a", "b"):
        (sweep / job).mkdir(parents=True)
        (sweep / job / "config.yaml").write_text("seed: 0\n")
    (sweep / "a" / STAGING).mkdir()  # a finished run being resumed: its piece runs in here
    (sweep / "a" / STAGING / "config.yaml").write_text("seed: 0\n")
    (sweep / "c").mkdir()
    (sweep / "c" / "error.txt").write_text("failed\n")
    assert find_runs([sweep]) == [sweep / "a", sweep / "b", sweep / "c"]
