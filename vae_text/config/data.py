"""The corpus and tokenizer configs."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from vae_text.core.errors import ConfigError

SPLITS = ("train", "valid", "test")
# data.max_len's default: a cap on a training sentence, in tokens (<eos> included). PTB's longest
# sentence is 82 words; the document-level corpora of text-VAE work (Yahoo Answers, Yelp in Yang et
# al. 2017) have at most 200 words, so nothing a sentence VAE is meant for is touched (subwords spend
# more tokens a word: raise it for long sentences under tokenizer=sentencepiece). A longer line is
# almost always a broken file (a missing newline, a pasted document): left in, the batch holding it
# makes the decoder run over every token of it (a 1 MB line: 170k LSTM steps and a 170k x vocabulary
# logit matrix), which stalls training without a word or exhausts memory.
MAX_LEN = 200
STRATEGIES = ("greedy", "sample", "top_k", "top_p", "beam")  # decoding strategies


# --- data and tokenizer ------------------------------------------------------------------------


@dataclass
class HubConfig:
    """Where to fetch the corpus with Hugging Face `datasets` when `dir` is missing (null: never)."""

    id: str
    config: str | None = None
    revision: str | None = None
    column: str = "text"
    splits: dict[str, str] = field(default_factory=lambda: {s: s for s in SPLITS})


def _ptb_hub() -> HubConfig:
    return HubConfig(id="ptb-text-only/ptb_text_only", config="penn_treebank",
                     revision="refs/convert/parquet",  # the main branch is a loading script datasets>=4 refuses
                     column="sentence", splits={"train": "train", "valid": "validation", "test": "test"})


@dataclass
class DataConfig:
    """The corpus. The defaults are Penn Treebank in Mikolov's preprocessing (one sentence a line,
    10k words): ptb.{train,valid,test}.txt in `dir`, fetched from the hub when `dir` is missing."""

    source: str = "files"  # "files": dir/files (data=ptb, data=text); "hf": a `datasets` dataset
    name: str = "ptb"  # files: a label for the cache; hf: the dataset (hub id, or "text" etc.)
    cache_dir: str = "data/cache"  # tokenized ids and sentencepiece models, keyed by the text's checksum
    # source=files
    dir: str = "data/ptb"  # relative to the directory you run from
    files: dict[str, str] = field(default_factory=lambda: {s: f"ptb.{s}.txt" for s in SPLITS})
    hub: HubConfig | None = field(default_factory=_ptb_hub)  # fetched into `dir` when it is missing
    # source=hf: load_dataset(name, config, data_dir=, data_files=, revision=)[splits[s]][column]
    config: str | None = None
    data_dir: str | None = None
    # local files: the dataset's split -> a file or a list of files ({}: none). A dict from the
    # start (not null), so both 'data.data_files={train: a.txt, ...}' and data.data_files.train=a.txt
    # compose: OmegaConf merges no keys into a null node
    data_files: dict[str, Any] = field(default_factory=dict)
    revision: str | None = None  # a branch, tag or commit of the hub repository
    column: str = "text"  # the column holding one sentence per row
    splits: dict[str, str] = field(default_factory=lambda: {s: s for s in SPLITS})  # ours -> theirs
    # labels, for the latent probes (vae_text.generation.probes); training never reads them
    label_column: str | None = None  # source=hf: the column holding each row's label
    label_files: dict[str, str] | None = None  # source=files: one label per line beside data.files
    prepare: str | None = None  # a key of vae_text.data.presets.RECIPES: builds `dir` from data.hub
    prepare_sizes: list[int] | None = None  # [train, valid, test]: instead of the recipe's sizes
    # what is used
    max_sentences: int | None = None  # use only the first N sentences of each split (smoke runs)
    max_len: int | None = MAX_LEN  # training only: longest sentence in tokens (null: no cap)
    long: str = "drop"  # what training does with longer ones: "drop" or "truncate" (eval keeps all)
    bucket_pool: int = 100  # sort sentences by length within pools of this many batches

    @classmethod
    def from_saved(cls, data: dict) -> DataConfig:
        """The data section of a checkpoint's config; keys older versions had are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def __post_init__(self) -> None:
        if isinstance(self.hub, dict):
            self.hub = HubConfig(**self.hub)
        if self.data_files is None:  # a run saved when its default was null
            self.data_files = {}
        if not isinstance(self.data_files, dict) or not all(
                isinstance(v, str) or (isinstance(v, list) and v and all(isinstance(f, str) for f in v))
                for v in self.data_files.values()):
            raise ConfigError(f"data.data_files={self.data_files!r} is invalid: a mapping of split "
                              f"names to a file or a list of files, e.g. {{train: a.txt, validation: "
                              f"b.txt, test: c.txt}}")
        if self.source not in ("files", "hf"):
            raise ConfigError(f"data.source={self.source!r} is invalid: files or hf")
        if set(self.files) != set(SPLITS):
            raise ConfigError(f"data.files must name exactly the splits {list(SPLITS)}")
        if set(self.splits) != set(SPLITS):
            raise ConfigError(f"data.splits must map exactly the splits {list(SPLITS)} to the "
                              f"dataset's split names")
        for key in ("max_sentences", "max_len"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, int) or value <= 1):
                raise ConfigError(f"data.{key}={value!r} is invalid: an integer > 1 or null")
        if self.label_files is not None and set(self.label_files) != set(SPLITS):
            raise ConfigError(f"data.label_files must name exactly the splits {list(SPLITS)}, or be null")
        if self.prepare_sizes is not None and (len(self.prepare_sizes) != 3 or not all(
                isinstance(n, int) and n > 0 for n in self.prepare_sizes)):
            raise ConfigError(f"data.prepare_sizes={self.prepare_sizes!r} is invalid: three positive "
                              f"integers [train, valid, test], or null")
        if self.long not in ("drop", "truncate"):
            raise ConfigError(f"data.long={self.long!r} is invalid: drop or truncate")
        if not isinstance(self.bucket_pool, int) or self.bucket_pool < 1:
            raise ConfigError(f"data.bucket_pool={self.bucket_pool!r} is invalid: an integer >= 1")


@dataclass
class TokenizerConfig:
    kind: str = "word"  # "word" (vocabulary from train) or "sentencepiece" (subwords)
    min_freq: int = 1  # word: keep words seen at least this often in train (rarer: <unk>)
    max_size: int | None = None  # word: keep the most frequent words (specials not counted)
    model_type: str = "unigram"  # sentencepiece: "unigram" or "bpe"
    vocab_size: int = 8000  # sentencepiece: pieces, the 4 specials included
    character_coverage: float = 1.0  # sentencepiece: share of characters kept (0.9995 suits large scripts)

    def __post_init__(self) -> None:
        if self.kind not in ("word", "sentencepiece"):
            raise ConfigError(f"tokenizer.kind={self.kind!r} is invalid: word or sentencepiece")
        if not isinstance(self.min_freq, int) or self.min_freq < 1:
            raise ConfigError(f"tokenizer.min_freq={self.min_freq!r} is invalid: an integer >= 1")
        if self.max_size is not None and (not isinstance(self.max_size, int) or self.max_size < 1):
            raise ConfigError(f"tokenizer.max_size={self.max_size!r} is invalid: a positive integer or null")
        if self.model_type not in ("unigram", "bpe"):
            raise ConfigError(f"tokenizer.model_type={self.model_type!r} is invalid: unigram or bpe")
        if not isinstance(self.vocab_size, int) or self.vocab_size <= 4:  # <pad> <bos> <eos> <unk>
            raise ConfigError(f"tokenizer.vocab_size={self.vocab_size!r} is invalid: an integer > 4")
        if not 0.9 <= float(self.character_coverage) <= 1.0:
            raise ConfigError(f"tokenizer.character_coverage={self.character_coverage!r} is invalid: "
                              f"a number in [0.9, 1]")

    def key(self) -> str:
        """The settings that change the ids (part of every cache key)."""
        if self.kind == "word":
            return f"word {self.min_freq} {self.max_size}"
        return f"sentencepiece {self.model_type} {self.vocab_size} {float(self.character_coverage)}"
