"""Odd and bad inputs of the report, the data reader, the sampler and the config: each gets one
line naming the key or file and the fix (non-zero exit, nothing written), or a behaviour the
docs describe. Hand-made run folders and unit calls: no training but one tiny checkpoint."""

import errno
import json
import logging
import os
from pathlib import Path

import pytest

from conftest import compose_cfg, folder_record, tiny_overrides
from vae_text.config import GenerationConfig, LoggerConfig, TrainRunConfig
from vae_text.core.errors import ConfigError, DataError
from vae_text.data.corpus import DataConfig, load_corpus, read_sentences
from vae_text.metrics.information import MutualInformation
from vae_text.remedies.pretrain import EncoderPretraining
from vae_text.report import main as report
from vae_text.reports.figures import curves_figure, rate_distortion_figure
from vae_text.run.logger import check_wandb_login, closing_summary

# --- vae_text.report on a hand-made run folder ---------------------------------------------------

RESULTS = {"best_val_neg_elbo": 80.5, "epochs": 3, "steps": 30, "stopped": "epochs",
           "train_seconds": 90.0, "test_seconds": 2.0, "test": {}}
EVAL = {"rec": 70.25, "kl": 3.5, "neg_elbo": 73.75, "nll_iw": 72.0, "mi": -0.004, "au": 2}


def make_run(folder: Path, results=RESULTS, evaluation=EVAL) -> Path:
    """A finished run as vae_text.train leaves it, less the checkpoints the report never reads."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / "config.yaml").write_text("objective:\n  kl_weight: 0.5\n")
    (folder / ".hydra" / "overrides.yaml").write_text("- objective.kl_weight=0.5\n")
    (folder / "results.json").write_text(results if isinstance(results, str) else json.dumps(results))
    (folder / "eval_test.json").write_text(json.dumps(evaluation))
    (folder / "metrics.jsonl").write_text("".join(
        json.dumps({"step": s, "epoch": s // 10, "train/rec": 90.0 - s, "train/kl": 1.0 + s / 10,
                    "train/beta": 0.5}) + "\n" for s in (5, 10, 15, 20, 25, 30)))
    return folder


def refused(args: list[str], folder: Path, capsys) -> str:
    """Runs the report on `args`, which it must refuse: exit 2, one line, `folder` untouched."""
    before = folder_record(folder)
    assert report(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert folder_record(folder) == before
    return err.strip()


def test_report_refuses_a_torn_results_json(tmp_path, capsys):
    run = make_run(tmp_path / "sweep" / "a", results='{"epochs": 3, "train_sec')
    assert refused([str(tmp_path / "sweep")], tmp_path, capsys) == (
        f"error: {run}/results.json: not valid JSON (line 1 column 15: Unterminated string "
        f"starting at; a torn or hand-edited file); delete it to list the run as not finished, or "
        f"leave the run ({run}) out of the folders given")


def test_report_refuses_a_results_json_without_epochs(tmp_path, capsys):
    run = make_run(tmp_path / "a", results={k: v for k, v in RESULTS.items() if k != "epochs"})
    assert refused([str(run)], tmp_path, capsys) == (
        f"error: {run}/results.json: has no number 'epochs' (vae_text.train writes epochs, "
        f"train_seconds there); delete it to list the run as not finished, or leave the run "
        f"({run}) out of the folders given")
    (run / "results.json").write_text("[1, 2]")
    assert refused([str(run)], tmp_path, capsys).startswith(
        f"error: {run}/results.json: holds a JSON list, not an object; delete it")


def test_report_refuses_non_utf8_overrides(tmp_path, capsys):
    run = make_run(tmp_path / "a")
    (run / ".hydra" / "overrides.yaml").write_bytes(b"- data.dir=caf\xe9\n")
    assert refused([str(run)], tmp_path, capsys) == (
        f"error: {run}/.hydra/overrides.yaml: not valid UTF-8 (byte 0xe9 at offset 14); re-encode "
        f"it as UTF-8, or delete it (the run is then listed without its overrides)")


def test_report_refuses_an_out_under_a_file(tmp_path, capsys):
    run = make_run(tmp_path / "a")
    (tmp_path / "notes.txt").write_text("mine\n")
    out = tmp_path / "notes.txt" / "report"
    assert refused([str(run), "--out", str(out)], tmp_path, capsys) == (
        f"error: --out {out}: {out.parent}: cannot write it (a part of the path is a file, not a "
        f"folder); choose --out in a folder you can write")


def test_report_help_names_the_command(capsys):
    with pytest.raises(SystemExit) as stop:
        report(["--help"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.startswith("usage: python -m vae_text.report [-h]")


def test_report_notes_that_a_negative_mi_is_an_estimate(tmp_path, capsys):
    run = make_run(tmp_path / "a")
    assert report([str(run), "--out", str(tmp_path / "rep")]) == 0
    table = (tmp_path / "rep.md").read_text()
    assert table.endswith("\n\nNote: MI is an estimate: a value a little below 0 is sampling noise "
                          "around 0, i.e. no information in z.\n")
    make_run(tmp_path / "b", evaluation={**EVAL, "mi": 0.25})
    assert report([str(tmp_path / "b"), "--out", str(tmp_path / "rep2")]) == 0
    assert "Note: MI" not in (tmp_path / "rep2.md").read_text()


def test_mi_below_zero_is_said_where_mi_is_printed():
    note = " (an estimate: a value a little below 0 is sampling noise around 0, i.e. no information in z)"
    assert MutualInformation.table({"mi": -0.004, "mi_sentences": 9, "sentences": 9}) == [
        ("MI (whole set)" + note, "-0.004")]
    assert MutualInformation.table({"mi": 0.5, "mi_sentences": 9, "sentences": 9}) == [
        ("MI (whole set)", "0.500")]
    results = {**RESULTS, "test": {"rec": 70.25, "mi": -0.004, "au": 2}}
    summary = closing_summary(results, Path("run"), "neg_elbo")
    assert f"test: rec 70.25, MI -0.004{note}, AU 2 (rec to IW-NLL" in summary


# --- the report's figures ------------------------------------------------------------------------


def rows_of(*runs):
    return [{"run": name, "overrides": f"objective.kl_weight={beta}", "beta": beta, "status": status,
             "path": Path(name), **({"kl": kl, "rec": 80.0 - kl} if kl is not None else {})}
            for name, beta, status, kl in runs]


def test_curves_legend_lists_drawn_runs_clear_of_the_axis_labels():
    rows = rows_of(("a", 0.5, "done", 1.0), ("b", 1.0, "failed: ConfigError", None),
                   ("c", 2.0, "done", 0.2))
    drawn = {"train/rec": ([5, 10, 15], [9.0, 8.0, 7.5]), "train/kl": ([5, 10, 15], [1.0, 2.0, 3.0]),
             "train/beta": ([5, 10, 15], [0.5, 0.5, 0.5]), "train/rec_per_token": ([], []),
             "val/rec": ([], []), "val/kl": ([], []), "val/sentences": ([], []), "val/tokens": ([], [])}
    nothing = {k: ([], []) for k in drawn}
    fig = curves_figure(rows, [drawn, nothing, drawn])
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["β=0.5", "β=2"]  # the failed job has no line
    box = legend.get_window_extent(renderer)
    for ax in fig.axes:
        label = ax.xaxis.label.get_window_extent(renderer)
        assert box.y1 <= label.y0 or not box.overlaps(label)


def test_rate_axis_starts_at_zero():
    fig, labels = rate_distortion_figure(rows_of(("a", 0.5, "done", 0.02), ("b", 1.0, "done", 4.0)))
    assert labels == ["β=0.5", "β=1"]
    assert fig.axes[0].get_xlim()[0] == 0.0
    fig, _ = rate_distortion_figure(rows_of(("a", 0.5, "done", -0.01), ("b", 1.0, "done", 4.0)))
    assert fig.axes[0].get_xlim()[0] == -0.01  # a Monte Carlo KL a hair below 0 stays in view


# --- data ----------------------------------------------------------------------------------------


def test_a_byte_order_mark_is_dropped_and_unicode_separators_are_spaces(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes("\ufeffthe cat\u2028sees\u2029it\r\nthe dog\rruns\n\ufeffa b\n".encode())
    assert read_sentences(path) == ([["the", "cat", "sees", "it"], ["the", "dog"], ["runs"],
                                     ["a", "b"]], 0)
    path.write_bytes(b"the cat\xc2\x85sees\n")  # NEL: a control character, refused with its line
    with pytest.raises(DataError, match=r"c\.txt:1: control character U\+0085"):
        read_sentences(path)


def test_a_bom_never_becomes_a_word_of_the_vocabulary(corpus_dir):
    train = corpus_dir / "ptb.train.txt"
    train.write_bytes(b"\xef\xbb\xbf" + train.read_bytes())
    corpus = load_corpus(DataConfig(dir=str(corpus_dir), cache_dir=str(corpus_dir / "cache"), hub=None))
    assert "\ufeff" not in "".join(corpus.tokenizer.itos)


def unwritable_cache(corpus_dir, caplog, cache_dir: Path) -> list[str]:
    """Loads the corpus with `cache_dir`; returns the warnings logged (the corpus must load)."""
    cfg = DataConfig(dir=str(corpus_dir), cache_dir=str(cache_dir), hub=None)
    with caplog.at_level(logging.WARNING, logger="vae_text.data"):
        corpus = load_corpus(cfg)
    assert len(corpus["train"]) == 120
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


FIX = ("; training goes on without it (the next start tokenizes again; set "
       "data.cache_dir=<a writable folder> to keep one)")


def test_a_full_disk_cache_is_one_warning(corpus_dir, caplog, monkeypatch):
    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)
    (warning,) = unwritable_cache(corpus_dir, caplog, corpus_dir / "cache")
    assert warning.startswith(f"data cache not written: {corpus_dir}/cache/ptb-")
    assert warning.endswith(f".pt: cannot write it (no space left on device){FIX}")
    assert not list((corpus_dir / "cache").glob("*.pt"))


def test_a_cache_dir_under_a_file_is_one_warning(corpus_dir, caplog):
    (corpus_dir / "plain").write_text("a file\n")
    (warning,) = unwritable_cache(corpus_dir, caplog, corpus_dir / "plain" / "cache")
    assert warning.startswith(f"data cache not written: {corpus_dir}/plain/cache/ptb-")
    assert warning.endswith(f".pt: cannot write it (a part of the path is a file, not a folder){FIX}")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into a read-only folder")
def test_a_read_only_cache_dir_is_one_warning(corpus_dir, caplog):
    cache = corpus_dir / "cache"
    cache.mkdir()
    cache.chmod(0o500)
    try:
        (warning,) = unwritable_cache(corpus_dir, caplog, cache)
    finally:
        cache.chmod(0o700)
    assert warning.endswith(f".pt: cannot write it (permission denied){FIX}")


@pytest.mark.parametrize("form", ["whole", "dotted"])
def test_datasets_local_files_compose_in_both_forms(tmp_path, monkeypatch, form):
    monkeypatch.chdir(tmp_path)  # the files named relative to where the command runs
    for name, words in (("a.txt", "the cat sees the dog\nthe dog runs\n"), ("b.txt", "a cat\n"),
                        ("c.txt", "the dog sees\na b c\n")):
        (tmp_path / name).write_text(words)
    files = ["'data.data_files={train: a.txt, validation: b.txt, test: c.txt}'"] if form == "whole" \
        else ["data.data_files.train=a.txt", "data.data_files.validation=b.txt", "data.data_files.test=c.txt"]
    overrides = ["+experiment=smoke", "data=hf", "data.name=text", f"data.cache_dir={tmp_path}/cache",
                 *(f.strip("'") for f in files)]
    settings = TrainRunConfig.from_cfg(compose_cfg(overrides))
    assert settings.data.data_files == {"train": "a.txt", "validation": "b.txt", "test": "c.txt"}
    corpus = load_corpus(settings.data)
    assert [len(corpus[s]) for s in ("train", "valid", "test")] == [2, 1, 2]


def test_data_files_of_the_wrong_shape_are_one_line():
    with pytest.raises(ConfigError) as err:
        DataConfig(source="hf", name="text", hub=None, data_files={"train": 3})
    assert str(err.value) == ("data.data_files={'train': 3} is invalid: a mapping of split names to "
                              "a file or a list of files, e.g. {train: a.txt, validation: b.txt, "
                              "test: c.txt}")
    assert DataConfig.from_saved({"data_files": None}).data_files == {}  # a run saved with null


# --- config --------------------------------------------------------------------------------------


def test_self_bleu_needs_two_samples():
    with pytest.raises(ConfigError) as err:
        GenerationConfig(self_bleu_samples=1)
    assert str(err.value) == "gen.self_bleu_samples=1 is invalid: an integer >= 2"


def test_pretrain_converge_without_epochs_is_one_line(corpus_dir):
    message = ("remedy.pretrain_converge=true needs remedy.pretrain_epochs=<N> (the autoencoder "
               "phase's cap, e.g. 20): without it encoder pretraining is off")
    with pytest.raises(ConfigError) as err:
        EncoderPretraining(pretrain_converge=True)
    assert str(err.value) == message
    from vae_text.run.parts import train_settings

    with pytest.raises(ConfigError) as err:
        train_settings(compose_cfg(tiny_overrides(corpus_dir, "+remedy.pretrain_converge=true")))
    assert str(err.value) == message


@pytest.fixture
def no_wandb_key(tmp_path, monkeypatch):
    """No key anywhere wandb looks, and no server it could reach."""
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "NETRC", "WANDB_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "home" / ".config" / "wandb"))
    return tmp_path / "home"


ONLINE = ("logger.mode=online needs a wandb API key and none is set for api.wandb.ai: run `wandb "
          "login` (or set WANDB_API_KEY), or log offline with logger.mode=offline (`wandb sync` "
          "uploads later)")


def test_wandb_online_without_a_key_is_one_line_before_any_data(no_wandb_key, tmp_path):
    with pytest.raises(ConfigError) as err:
        check_wandb_login(LoggerConfig(name="wandb", mode="online"))
    assert str(err.value) == ONLINE
    check_wandb_login(LoggerConfig(name="wandb", mode="offline"))
    check_wandb_login(LoggerConfig(name="console", mode="online"))
    from vae_text.train import train

    cfg = compose_cfg(tiny_overrides(tmp_path / "no_such_corpus", "logger=wandb", "logger.mode=online"))
    with pytest.raises(ConfigError) as err:  # refused before the (missing) data is looked at
        train(cfg, tmp_path / "run")
    assert str(err.value) == ONLINE
    assert not (tmp_path / "run").exists()


def test_wandb_online_with_a_netrc_key_passes(no_wandb_key, monkeypatch):
    no_wandb_key.mkdir()
    (no_wandb_key / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40 + "\n")
    (no_wandb_key / ".netrc").chmod(0o600)
    check_wandb_login(LoggerConfig(name="wandb", mode="online"))
    monkeypatch.setenv("WANDB_BASE_URL", "https://wandb.example.org")  # a key for another server
    with pytest.raises(ConfigError, match="none is set for wandb.example.org"):
        check_wandb_login(LoggerConfig(name="wandb", mode="online"))


# --- sample --------------------------------------------------------------------------------------


def test_reconstruct_refuses_a_sentence_longer_than_the_model_reads(tiny_run, tmp_path):
    from vae_text.pipeline import TextVAEPipeline
    from vae_text.sample import run

    lines = tmp_path / "in.txt"
    lines.write_text("the cat sees the dog\n\n" + "the dog " * 150 + "\nthe cat\n")
    cfg = {"checkpoint": str(tiny_run), "mode": "reconstruct", "file": str(lines), "device": "cpu"}
    with pytest.raises(DataError) as err:
        run(compose_sample(cfg))
    assert str(err.value) == (f"{lines}:3: a sentence of 300 words; a model reads at most 200 words a "
                              f"sentence (data.max_len it trained with, or 200): split or shorten it")
    lines.write_text("\ufeffthe cat\u2028sees the dog\n")
    (out,) = run(compose_sample(cfg))
    assert out.startswith("  the cat sees the dog\n> ")  # the BOM dropped, U+2028 a space
    vae = TextVAEPipeline.from_pretrained(tiny_run, device="cpu")  # the notebook's way in
    with pytest.raises(DataError) as err:
        vae.reconstruct(["the cat", "the dog " * 201])
    assert str(err.value) == ("sentence 1: a sentence of 402 words; a model reads at most 200 words a "
                              "sentence (data.max_len it trained with, or 200): split or shorten it")


def compose_sample(values: dict):
    from vae_text.config import SampleConfig, section

    return section(SampleConfig, values, "")


def test_report_wandb_online_without_a_key_is_one_line(no_wandb_key, tmp_path, capsys):
    run = make_run(tmp_path / "a")
    assert refused([str(run), "--wandb", "--wandb-mode", "online"], tmp_path, capsys) == (
        "error: " + ONLINE.replace("logger.mode", "--wandb-mode"))
