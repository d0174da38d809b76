"""data=yahoo / yelp / snli: the recipes, run offline on small fixtures in the hub's parquet layout."""

import dataclasses
import json

import pytest

from conftest import compose_cfg
from vae_text.config import DataConfig, TrainRunConfig
from vae_text.core.errors import ConfigError, DataError
from vae_text.data.corpus import load_corpus
from vae_text.data.presets import RECIPES, build_splits, words_of
from vae_text.data.text import read_labels, read_split
from vae_text.run.parts import check_names, train_settings


def test_words_of_lowercases_and_splits_punctuation():
    assert words_of("Hello, World!<br />It's 2 A.M.\\nOK") == [
        "hello", ",", "world", "!", "it's", "2", "a", ".", "m", ".", "ok"]


def rows_yahoo(n, seed):
    topics = ["sports", "music", "health"]
    return [{"id": i, "topic": i % 3, "question_title": f"Why {topics[i % 3]} {i}?",
             "question_content": "" if i % 2 else f"Asking about {topics[i % 3]} again",
             "best_answer": f"Because {topics[i % 3]} is fun" + " very" * (i % 7 + seed)}
            for i in range(n)]


def test_build_splits_sizes_disjointness_vocabulary_and_labels():
    recipe = dataclasses.replace(RECIPES["yahoo"], sizes=(20, 5, 6), vocab=9, max_words=16)
    tables = {"train": rows_yahoo(40, 0), "test": rows_yahoo(15, 1)}
    splits = build_splits(tables, recipe, "fixture")
    assert [len(splits[s]) for s in ("train", "valid", "test")] == [20, 5, 6]
    train = {" ".join(w) for w, _ in splits["train"]}
    assert not train & {" ".join(w) for w, _ in splits["valid"]}  # different rows of one source
    vocab = {w for words, _ in splits["train"] for w in words}
    assert len(vocab) == 9 and "<unk>" in vocab  # 8 most frequent words + <unk>
    assert all(1 <= len(w) <= 16 for rows in splits.values() for w, _ in rows)
    # labels stay with their text: the topic word is in the question title ("why <topic> <n> ?")
    names = ["sports", "music", "health"]
    assert all(names[int(label)] in words or "<unk>" in words[:3]
               for words, label in splits["train"])
    assert build_splits(tables, recipe, "fixture") == splits  # seeded


def write_hub(folder, name, tables):
    """A dataset repository as the hub stores it: <config>/<split>-00000-of-00001.parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (folder / name).mkdir(parents=True)
    for split, rows in tables.items():
        pq.write_table(pa.Table.from_pylist(rows), folder / name / f"{split}-00000-of-00001.parquet")
    return folder


def preset(name, tmp_path, hub, *extra):
    cfg = compose_cfg(["+experiment=smoke", f"data={name}", f"data.dir={tmp_path / name}",
                       f"data.hub.id={hub}", f"data.cache_dir={tmp_path / 'cache'}", *extra])
    return train_settings(cfg).data


def test_yahoo_is_prepared_once_and_read_as_a_labelled_folder_corpus(tmp_path):
    hub = write_hub(tmp_path / "hub", "yahoo_answers_topics",
                    {"train": rows_yahoo(60, 0), "test": rows_yahoo(20, 1)})
    data = preset("yahoo", tmp_path, hub, "data.prepare_sizes=[30,8,9]")
    assert data.prepare == "yahoo" and data.max_len == 201
    corpus = load_corpus(data)
    assert [len(corpus[s]) for s in ("train", "valid", "test")] == [30, 8, 9]
    card = json.loads((tmp_path / "yahoo" / "prepared.json").read_text())
    assert card["sizes"] == {"train": 30, "valid": 8, "test": 9} and card["labels"] == "topic"
    labels = read_labels(data, "test")
    assert len(labels) == 9 and set(labels) <= {"0", "1", "2"}
    first = (tmp_path / "yahoo" / "yahoo.test.txt").read_text()
    import shutil

    shutil.rmtree(hub)  # prepared: the source is never needed again
    assert " ".join(read_split(data, "test")[0][0]) == first.splitlines()[0]


def test_yelp_and_snli_recipes(tmp_path):
    reviews = [{"label": i % 5, "text": f"Great place number {i}!" + " Food was ok." * (i % 4)}
               for i in range(50)]
    yelp = preset("yelp", tmp_path, write_hub(tmp_path / "y", "yelp_review_full",
                                              {"train": reviews, "test": reviews[:12]}),
                  "data.prepare_sizes=[20,6,7]")
    assert read_labels(yelp, "valid") and len(read_split(yelp, "train")[0]) == 20
    pairs = [{"premise": f"A man plays {i % 4}.", "hypothesis": f"Someone plays {i % 9}.",
              "label": i % 3 - (i % 10 == 0)} for i in range(60)]  # label -1: no gold label
    snli = preset("snli", tmp_path, write_hub(tmp_path / "s", "plain_text",
                                              {"train": pairs, "validation": pairs, "test": pairs}),
                  "data.prepare_sizes=[6,4,4]")
    train = read_split(snli, "train")[0]
    assert len(train) == 6 and len({" ".join(s) for s in train}) == 6  # hypotheses, no repeats
    assert set(read_labels(snli, "train")) <= {"0", "1", "2"}


def test_unreachable_source_is_one_line_naming_the_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    data = preset("snli", tmp_path, tmp_path / "empty")
    with pytest.raises(DataError, match=r"data directory .*snli is missing.*go online so `datasets` can fetch"):
        load_corpus(data)
    assert not (tmp_path / "snli").exists()  # nothing half-written


def test_preset_keys_are_checked():
    with pytest.raises(ConfigError, match=r"data\.prepare='imdb' is unknown: choose one of \['snli', "):
        check_names(TrainRunConfig(data=DataConfig(prepare="imdb")))
    with pytest.raises(ConfigError, match="data.prepare_sizes"):
        DataConfig(prepare="yelp", prepare_sizes=[1, 2])
