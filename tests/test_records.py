"""A finished run's folder is its record: no refused, failing or diverging command changes a byte
of it, an accepted resume keeps every earlier piece's `.hydra/`, and a checkpoint that cannot be
used (non-finite weights, a damaged saved config, a file torch cannot read) is refused in one line
naming the file."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from test_faults import one_line_error, run_cli

from conftest import folder_record, tiny_overrides, write_corpus
from vae_text.core.errors import CheckpointError
from vae_text.run import record
from vae_text.run.checkpoint import load_checkpoint, load_model
from vae_text.run.rundir import claim, release


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, list[str]]:
    """A finished run trained through the CLI (so it has `.hydra/` and `train.log`), and the
    overrides it was trained with."""
    root = tmp_path_factory.mktemp("records")
    run = root / "run"
    over = tiny_overrides(write_corpus(root / "corpus"), "train.max_steps=6", "eval.iw_samples=2")
    p = run_cli("vae_text.train", [*over, f"hydra.run.dir={run}"])
    assert p.returncode == 0, p.stderr[-2000:]
    return run, over


DIVERGING = ["train.max_steps=12", "objective.kl_weight=1e39"]  # beta = 1e39 overflows float32 at once


@pytest.mark.slow
@pytest.mark.parametrize("resume, extra, needle", [
    ("{run}", ["model.decoder_hidden=8"], "model.decoder_hidden is 16 in the checkpoint but 8 now"),
    ("{run}", ["data.dir={tmp}/no_data"], "no_data does not exist"),
    ("{run}", DIVERGING, "error: training diverged at step 7: the gradient norm is inf; the resumed "
     "piece is discarded and {run} is as it was. Lower optim.lr or set optim.clip_norm"),
    # its best checkpoint names the same run (so Hydra's files go to staging) but cannot be resumed
    ("{run}/checkpoints/best.pt", DIVERGING, "this checkpoint holds weights only; resume from a "
     "run's checkpoints/last.pt"),
], ids=["refused", "failing", "diverging", "refused-from-best"])
def test_a_resume_that_is_not_accepted_changes_no_byte_of_a_finished_run(finished, tmp_path, resume,
                                                                         extra, needle):
    run, over = finished
    before = folder_record(run)
    assert {".hydra/overrides.yaml", "train.log", "metrics.jsonl", "results.json", "eval_test.json",
            "config.yaml", "checkpoints/best.pt", "checkpoints/last.pt"} <= set(before)
    args = [*over, f"hydra.run.dir={run}", f"train.resume={resume.format(run=run)}",
            *(a.format(tmp=tmp_path) for a in extra)]
    one_line_error(run_cli("vae_text.train", args), needle.format(run=run))
    assert folder_record(run) == before


@pytest.mark.slow
def test_an_accepted_resume_keeps_every_earlier_piece(finished, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished[0], run)
    before = {name: (run / name).read_bytes() for name in
              (".hydra/overrides.yaml", ".hydra/config.yaml", "train.log", "metrics.jsonl")}
    p = run_cli("vae_text.train", [*finished[1], f"hydra.run.dir={run}", f"train.resume={run}",
                                   "train.max_steps=12"])
    assert p.returncode == 0, p.stderr[-2000:]
    earlier = run / ".hydra" / "earlier"
    assert sorted(p.name for p in earlier.iterdir()) == ["1"]  # the launch's files, as they were
    assert (earlier / "1" / "overrides.yaml").read_bytes() == before[".hydra/overrides.yaml"]
    assert (earlier / "1" / "config.yaml").read_bytes() == before[".hydra/config.yaml"]
    latest = (run / ".hydra" / "overrides.yaml").read_text()
    assert "- train.max_steps=12" in latest and f"- train.resume={run}" in latest
    log = (run / "train.log").read_bytes()
    assert log.startswith(before["train.log"]) and b"resumed from" in log[len(before["train.log"]):]
    kept = load_checkpoint(finished[0], "last.pt")["metrics_lines"]
    old, new = before["metrics.jsonl"].splitlines(), (run / "metrics.jsonl").read_bytes().splitlines()
    assert new[:kept] == old[:kept] and b'"step": 12' in new[-1] and len(new) > len(old)
    assert load_checkpoint(run, "last.pt")["state"]["step"] == 12
    assert not (run / record.STAGING).exists()


def test_accepted_pieces_are_numbered_and_a_killed_resume_leaves_nothing(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text("- seed=1\n")
    (run / "train.log").write_text("first\n")
    for n in (1, 2):
        stage = run / record.STAGING / ".hydra"
        stage.mkdir(parents=True)
        (stage / "overrides.yaml").write_text(f"- seed=1\n- train.resume={n}\n")
        (run / record.STAGING / "train.log").write_text(f"piece {n}\n")
        record.accept(run)
    assert (run / ".hydra" / "overrides.yaml").read_text() == "- seed=1\n- train.resume=2\n"
    assert [(run / ".hydra" / "earlier" / str(n) / "overrides.yaml").read_text() for n in (1, 2)] == \
        ["- seed=1\n", "- seed=1\n- train.resume=1\n"]
    assert (run / "train.log").read_text() == "first\npiece 1\npiece 2\n"
    (run / record.STAGING / "checkpoints").mkdir(parents=True)  # what a killed resume leaves
    assert claim(run)
    assert not (run / record.STAGING).exists()
    release(run)
    assert (run / ".lock").read_bytes() == b""  # the pid goes with the lock


# --- checkpoints that cannot be used -------------------------------------------------------------


def altered(finished, tmp_path: Path, change) -> Path:
    blob = torch.load(finished[0] / "checkpoints" / "best.pt", weights_only=True)
    change(blob)
    path = tmp_path / "altered.pt"
    torch.save(blob, path)
    return path


@pytest.mark.slow
def test_a_checkpoint_with_non_finite_weights_is_refused_naming_the_tensor(finished, tmp_path):
    from vae_text.pipeline import TextVAEPipeline

    def poison(blob):
        blob["model"]["decoder.proj.weight"][2, 3] = float("nan")

    path = altered(finished, tmp_path, poison)
    want = (f"{path}: weight 'decoder.proj.weight' has NaN or infinite values; the model cannot be "
            f"evaluated or sampled: use an earlier checkpoint")
    with pytest.raises(CheckpointError) as err:
        TextVAEPipeline.from_pretrained(path, device="cpu")  # what vae_text.sample loads with
    assert str(err.value) == want
    assert one_line_error(run_cli("vae_text.evaluate", [f"checkpoint={path}"])) == f"error: {want}"


@pytest.mark.parametrize("change, message", [
    (lambda b: b["config"].pop("data"), "its saved config has no `data` section"),
    (lambda b: b.update(vocab="the cat sat"), "its vocabulary is str, not a list of tokens"),
    (lambda b: b["config"]["model"].update(latent_size=-1), "its saved config is invalid: model.latent_size"),
    (lambda b: b.update(tokenizer="word"), "its tokenizer state is str, not a mapping"),
])
def test_a_damaged_saved_config_is_refused_naming_the_checkpoint(finished, tmp_path, change, message):
    path = altered(finished, tmp_path, change)
    with pytest.raises(CheckpointError) as err:
        load_model(path)
    assert str(err.value).startswith(f"{path}: {message}"), str(err.value)


def test_an_export_with_non_finite_weights_or_without_its_data_section_is_refused(finished, tmp_path):
    import json

    from safetensors.torch import load_file, save_file

    from vae_text.config import EvaluateConfig
    from vae_text.evaluate import run as evaluate_run
    from vae_text.pipeline import TextVAEPipeline

    folder = TextVAEPipeline.from_pretrained(finished[0], device="cpu").save_pretrained(tmp_path / "export")
    config = json.loads((folder / "config.json").read_text())
    del config["data"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError) as err:
        evaluate_run(EvaluateConfig(checkpoint=str(folder), iw_samples=2, progress=False, device="cpu"))
    assert str(err.value) == (f"{folder}: its saved config has no `data` section, so the data it was "
                              f"trained on is unknown: evaluate a training run's checkpoint")
    weights = load_file(folder / "model.safetensors")
    weights["encoder.embed.weight"][1, 0] = float("inf")
    save_file(weights, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"model.safetensors: weight 'encoder.embed.weight' has NaN or "
                                              r"infinite values; the model cannot be evaluated or sampled"):
        TextVAEPipeline.from_pretrained(folder, device="cpu")


@pytest.mark.slow
def test_torch_load_errors_are_summarised_in_our_words(finished, tmp_path, monkeypatch):
    good = (finished[0] / "checkpoints" / "best.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good[: len(good) // 2])
    p = run_cli("vae_text.evaluate", [f"checkpoint={truncated}"])
    assert one_line_error(p) == (f"error: {truncated}: not a readable vae_text checkpoint (not a "
                                 f"complete torch archive); it may be truncated or corrupt: use another one")
    tiny = tmp_path / "tiny.pt"
    tiny.write_bytes(good[:100])
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tiny)
    assert str(err.value) == (f"{tiny}: not a readable vae_text checkpoint (PytorchStreamReader failed "
                              f"reading zip archive: failed finding central directory); it may be "
                              f"truncated or corrupt: use another one")  # torch's advice after it left out

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    malicious = tmp_path / "malicious.pt"
    torch.save({"model": {}, "config": {}, "vocab": [], "x": Payload()}, malicious)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(malicious)
    line = str(err.value)
    assert line.startswith(f"{malicious}: refused: it holds Python objects that no vae_text checkpoint holds (")
    assert "Unsupported global: GLOBAL print was not an allowed global by default)" in line and "\n" not in line
    assert not any(advice in line for advice in ("can still be loaded", "weights_only", "trusted source"))

    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pt: .*the file is empty or ends early"):
        load_checkpoint(empty)

    words = "reading " * 30
    def fails(*args, **kwargs):
        raise RuntimeError(f"\x1b[1mfailed\x1b[0m {words}archive. This can happen if ...")

    monkeypatch.setattr(torch, "load", fails)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(truncated)
    reason = str(err.value).split("(", 1)[1].split(")", 1)[0]
    assert "\x1b" not in reason and reason.startswith("failed reading reading") and reason.endswith(" ...")
    assert set(reason.removesuffix(" ...").split()) == {"failed", "reading"}  # cut between words
    assert len(reason) <= 124
