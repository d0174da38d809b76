"""The latent-space half of the generation suite: probes, interpolation, neighbours, labels."""

import json

import pytest
import torch

from conftest import compose_cfg, tiny_overrides, write_corpus
from vae_text.config import DataConfig, GenerationConfig
from vae_text.core.errors import DataError
from vae_text.data.text import read_labels, read_split
from vae_text.generation.probes import (
    bucketize,
    edit_distance,
    interpolation_smoothness,
    label_ids,
    latent_metrics,
    length_buckets,
    nearest,
    path_changes,
    posterior_means,
    probe_accuracy,
)
from vae_text.model.decoding import greedy_decode
from vae_text.run.checkpoint import load_model
from vae_text.train import train


def test_length_buckets_are_train_quantiles():
    edges = length_buckets([1, 2, 3, 4, 5, 6, 7, 8], 4)  # quartiles 2.75, 4.5, 6.25
    assert edges.tolist() == pytest.approx([2.75, 4.5, 6.25])
    assert bucketize([1, 3, 5, 7, 4.5], edges).tolist() == [0, 1, 2, 3, 2]


def lengths_and_codes(n, dims, seed, informative):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, 30, (n,), generator=g)
    mu = torch.randn(n, dims, generator=g)
    if informative:  # the first unit carries the length (plus a little noise)
        mu[:, 0] = lengths.double().float() / 10 + 0.01 * mu[:, 0]
    return lengths.tolist(), mu


@pytest.mark.parametrize("informative", [False, True])
def test_probe_is_at_chance_on_random_mu_and_high_when_mu_encodes_length(informative):
    train_len, train_mu = lengths_and_codes(700, 5, 0, informative)
    test_len, test_mu = lengths_and_codes(500, 5, 1, informative)
    edges = length_buckets(train_len, 4)
    got = probe_accuracy(train_mu, bucketize(train_len, edges), test_mu, bucketize(test_len, edges))
    assert got["classes"] == 4 and 0.15 < got["chance"] < 0.35
    if informative:
        assert got["accuracy"] > 0.95
    else:  # 500 test points: chance +- 0.1 covers > 4 standard deviations
        assert abs(got["accuracy"] - 0.25) < 0.1


def test_label_ids_share_one_numbering():
    y_train, y_test = label_ids(["b", "a", "b"], ["c", "a"])
    assert y_train.tolist() == [1, 0, 1] and y_test.tolist() == [2, 0]


def test_edit_distance_and_path_changes_by_hand():
    assert edit_distance("a b c".split(), "a c d".split()) == 2  # drop b, add d
    assert edit_distance([], "x y".split()) == 2
    assert edit_distance("k i t t e n".split(), "s i t t i n g".split()) == 3
    assert path_changes([["a"], ["a"], ["b", "a"], ["b"]]) == pytest.approx((0 + 1 + 1) / 3)


def test_nearest_finds_the_closest_rows():
    keys = torch.tensor([[0.0, 0.0], [5.0, 5.0], [1.0, 0.0], [0.0, 3.0]])
    assert nearest(torch.tensor([[0.9, 0.1], [4.0, 4.0]]), keys, 2).tolist() == [[2, 0], [1, 3]]


@pytest.fixture(scope="module")
def vae(tmp_path_factory):
    root = tmp_path_factory.mktemp("probe")
    corpus = write_corpus(root / "corpus", sizes=(90, 20, 29))
    train(compose_cfg(tiny_overrides(corpus, "eval.iw_samples=2", "train.max_steps=25")), root / "run")
    return load_model(root / "run")[:2], corpus


def test_interpolation_with_two_points_changes_as_much_as_the_endpoints_differ(vae):
    (model, vocab), corpus = vae
    sentences = read_split(DataConfig(dir=str(corpus), hub=None), "test")[0][:6]
    mu = posterior_means(model, sentences, vocab)
    got = interpolation_smoothness(model, vocab, mu, pairs=3, steps=2)
    ends = [vocab.decode(s) for s in greedy_decode(model, mu)]
    expected = sum(edit_distance(ends[2 * p], ends[2 * p + 1]) for p in range(3)) / 3
    assert got == pytest.approx(expected)
    same = torch.stack([mu[0], mu[0]])
    assert interpolation_smoothness(model, vocab, same, pairs=1, steps=7) == 0.0


def test_posterior_means_keep_the_order_given(vae):
    (model, vocab), corpus = vae
    sentences = read_split(DataConfig(dir=str(corpus), hub=None), "train")[0][:13]
    mu = posterior_means(model, sentences, vocab, batch_size=4)  # length-sorted batches inside
    one = posterior_means(model, sentences[5:6], vocab)
    assert torch.allclose(mu[5], one[0], atol=1e-6)


def write_labels(corpus, labels_of):
    for split in ("train", "valid", "test"):
        lines = (corpus / f"ptb.{split}.txt").read_text().splitlines()
        (corpus / f"ptb.{split}.labels").write_text("".join(f"{labels_of(line)}\n" for line in lines))
    return {s: f"ptb.{s}.labels" for s in ("train", "valid", "test")}


def test_label_probe_reads_label_files_and_learns_a_label_the_code_carries(vae):
    (model, vocab), corpus = vae
    files = write_labels(corpus, lambda line: "long" if len(line.split()) > 7 else "short")
    data = DataConfig(dir=str(corpus), hub=None, label_files=files)
    train_s, test_s = read_split(data, "train")[0], read_split(data, "test")[0]
    labels = read_labels(data, "train"), read_labels(data, "test")
    assert labels[1] == ["long" if len(s) > 7 else "short" for s in test_s]
    got = latent_metrics(model, vocab, train_s, test_s, GenerationConfig(neighbours=2), labels)
    assert got["probe_label_classes"] == 2 and 0 <= got["probe_label_accuracy"] <= 1
    assert len(got["neighbours"]) == 2
    assert read_labels(DataConfig(dir=str(corpus), hub=None), "test") is None


def test_label_files_must_match_the_text_line_for_line(tmp_path):
    corpus = write_corpus(tmp_path / "c", sizes=(5, 4, 3))
    files = write_labels(corpus, lambda line: "x")
    (corpus / files["test"]).write_text("x\n")
    with pytest.raises(DataError, match="1 labels for the 3 lines"):
        read_labels(DataConfig(dir=str(corpus), hub=None, label_files=files), "test")


def test_hf_label_column_skips_the_rows_the_text_skips(tmp_path):
    rows = {"train": [("a b", 1), ("", 2), ("c d e", 0)], "valid": [("a", 1)], "test": [("b", 0)]}
    files = {}
    for split, items in rows.items():
        path = tmp_path / f"{split}.jsonl"
        path.write_text("".join(json.dumps({"text": t, "stars": y}) + "\n" for t, y in items))
        files[split] = str(path)
    data = DataConfig(source="hf", name="json", hub=None, data_files=files, label_column="stars",
                      splits={"train": "train", "valid": "valid", "test": "test"})
    assert read_labels(data, "train") == ["1", "0"]
    assert [len(s) for s in read_split(data, "train")[0]] == [2, 3]
