"""Every config of vae_text as a dataclass: the one home of every default.

Hydra composes `conf/` on top of these classes (`register()` stores them in its ConfigStore as the
schemas `base_train`, `base_evaluate` and `base_sample`), so the YAML files hold only what differs
from the defaults below, and a misspelt key (`model.latnet_size=3`) or a wrong type (`optim.lr=abc`)
fails while Hydra composes, with the key named (`hydra_entry` prints it as one line). Fields typed
`dict[str, Any]` (a schedule's parameters, a family's options) stay open: any key composes and the
dataclass that owns the field checks it. OmegaConf does not run `__post_init__`, so the range
checks run after composing: `section(cls, cfg.model, "model")` (or `TrainRunConfig.from_cfg`)
builds the dataclasses, and a bad value is a one-line `ConfigError` naming the key.

This module is the lowest layer: it imports nothing of vae_text but the errors (the KL schedules
are looked up lazily).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import os
import sys
import typing
from dataclasses import dataclass, field
from typing import Any, TypeVar

from omegaconf import MISSING, DictConfig, OmegaConf

from vae_text.errors import ConfigError

T = TypeVar("T")

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
    data_files: dict[str, str] | None = None  # {train: ..., valid: ..., test: ...}: local files
    revision: str | None = None  # a branch, tag or commit of the hub repository
    column: str = "text"  # the column holding one sentence per row
    splits: dict[str, str] = field(default_factory=lambda: {s: s for s in SPLITS})  # ours -> theirs
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


# --- model and objective -----------------------------------------------------------------------


@dataclass
class ModelConfig:
    """The founding design: embedding 100 -> LSTM 200 encoder -> Gaussian (mu, logvar), z 32
    -> LSTM 100 decoder conditioned on z -> softmax over the vocabulary."""

    kind: str = "vae"  # "vae" (latent z) or "lm" (the same decoder, no latent)
    encoder: str = "lstm"  # vae_text.encoders.ENCODERS
    decoder: str = "lstm"  # vae_text.decoders.DECODERS
    posterior: str = "gaussian"  # q(z|x): vae_text.latent.POSTERIORS
    prior: str = "standard_normal"  # p(z): vae_text.latent.PRIORS
    encoder_args: dict[str, Any] = field(default_factory=dict)  # options of the chosen encoder
    decoder_args: dict[str, Any] = field(default_factory=dict)  # ... decoder
    posterior_args: dict[str, Any] = field(default_factory=dict)  # ... posterior family
    prior_args: dict[str, Any] = field(default_factory=dict)  # ... prior
    embed_size: int = 100
    encoder_hidden: int = 200
    encoder_layers: int = 1
    bidirectional: bool = False
    latent_size: int = 32
    decoder_hidden: int = 100
    decoder_layers: int = 1
    conditioning: str = "both"  # how z enters the decoder: "init", "concat" or "both"
    embed_dropout: float = 0.0  # dropout on decoder inputs (embeddings)
    output_dropout: float = 0.0  # dropout on decoder outputs, before the vocabulary projection
    word_dropout: float = 0.0  # fraction of decoder input words replaced by <unk> while training
    word_dropout_end: float | None = None  # anneal the rate linearly to this (null: constant)
    word_dropout_steps: int = 10_000  # ... over this many steps
    bn_gamma: float | None = None  # BN-VAE (Zhu et al. 2020): batch-norm mu with this fixed scale
    sample_z: bool = True  # False: z = mu (with kl_weight = 0 this is the deterministic autoencoder)
    init: str = "default"  # "default": PyTorch's; "uniform": U(-0.01, 0.01), embeddings U(-0.1, 0.1)

    def __post_init__(self) -> None:
        _choice("model.kind", self.kind, ("vae", "lm"))
        _choice("model.conditioning", self.conditioning, ("init", "concat", "both"))
        _choice("model.init", self.init, ("default", "uniform"))
        for key in ("embed_size", "encoder_hidden", "encoder_layers", "latent_size",
                    "decoder_hidden", "decoder_layers"):
            _positive_int(f"model.{key}", getattr(self, key))
        for key in ("embed_dropout", "output_dropout", "word_dropout"):
            _fraction(f"model.{key}", getattr(self, key))
        if self.word_dropout_end is not None:
            _fraction("model.word_dropout_end", self.word_dropout_end)
            _positive_int("model.word_dropout_steps", self.word_dropout_steps)
        _positive_or_null("model.bn_gamma", self.bn_gamma)
        if self.kind == "lm" and self.bn_gamma is not None:
            raise ConfigError("model.bn_gamma is set but model.kind=lm has no latent: unset it")
        self._check_parts()

    def _check_parts(self) -> None:
        """Each part names a registry entry, and its `_args` are options that entry declares."""
        from vae_text.decoders import DECODERS  # late imports: they import torch
        from vae_text.encoders import ENCODERS
        from vae_text.latent import POSTERIORS, PRIORS

        parts = [("decoder", DECODERS)]
        if self.kind == "vae":
            parts += [("encoder", ENCODERS), ("posterior", POSTERIORS), ("prior", PRIORS)]
        for part, registry in parts:
            name, args = getattr(self, part), getattr(self, f"{part}_args")
            if name not in registry:
                raise ConfigError(f"model.{part}={name!r} is unknown: choose one of {sorted(registry)}")
            if not isinstance(args, dict):
                raise ConfigError(f"model.{part}_args={args!r} is invalid: a mapping of options")
            known = _options(registry[name])
            for key in args:
                if key not in known:
                    raise ConfigError(f"model.{part}_args.{key} is not an option of "
                                      f"model.{part}={name}: it takes {sorted(known) or 'none'}")
        if self.kind == "vae" and self.bn_gamma is not None:
            if "bn_gamma" not in _options(POSTERIORS[self.posterior]):
                raise ConfigError(f"model.bn_gamma (BN-VAE) is not an option of "
                                  f"model.posterior={self.posterior}: unset it")
            if "bn_gamma" in self.posterior_args:
                raise ConfigError("model.bn_gamma and model.posterior_args.bn_gamma are both set: "
                                  "set model.bn_gamma only")


class ScheduleConfig(dict):
    """`objective.schedule`, flat as users type it (`objective.schedule.warmup_steps=100`): `name`
    picks a function in `objective.SCHEDULES` and every other key is one of its keyword arguments,
    whose defaults are the function's own. A new schedule is a new function: no schema changes."""

    @property
    def name(self) -> str:
        return self["name"]

    @property
    def params(self) -> dict[str, Any]:
        """Every keyword argument of the schedule: those set, else the function's defaults."""
        from vae_text.objective import SCHEDULES

        given = {k: v for k, v in self.items() if k != "name"}
        return {**schedule_defaults(SCHEDULES[self.name]), **given}

    def __eq__(self, other: object) -> bool:  # the same function with the same arguments
        return isinstance(other, ScheduleConfig) and (self.name, self.params) == (other.name, other.params)

    __hash__ = None  # type: ignore[assignment]


@dataclass
class ObjectiveConfig:
    """loss = rec + beta(step) * KL with beta(step) = kl_weight * schedule(step); validation and
    test always report the beta = 1 ELBO."""

    kl_weight: float = 1.0  # beta: the weight the schedule rises to (the sweep key)
    # A dict, not a dataclass, so that any schedule's parameters pass composition (ScheduleConfig).
    # Its keys' defaults are the schedule function's: the option objective/schedule=linear (made
    # from its signature, vae_text.config.register) spells them out in the composed config.
    schedule: dict[str, Any] = field(default_factory=lambda: {"name": "linear"})
    free_bits: float = 0.0  # nats the KL may use for free (0: off); the reported KL is the true KL
    free_bits_mode: str = "dim"  # "dim": batch mean per dimension; "sentence"; "element" (Li et al.)

    def __post_init__(self) -> None:
        if not isinstance(self.kl_weight, (int, float)) or self.kl_weight < 0:
            raise ConfigError(
                f"objective.kl_weight={self.kl_weight!r} is invalid: it must be a number >= 0"
            )
        if not isinstance(self.free_bits, (int, float)) or self.free_bits < 0:
            raise ConfigError(f"objective.free_bits={self.free_bits!r} is invalid: nats >= 0")
        _choice("objective.free_bits_mode", self.free_bits_mode, ("dim", "sentence", "element"))
        from vae_text.objective import SCHEDULES  # late import: objective imports nothing of ours

        params = dict(self.schedule)
        name = params.pop("name", None)
        if name not in SCHEDULES:
            raise ConfigError(
                f"objective.schedule.name={name!r} is unknown: "
                f"choose one of {sorted(SCHEDULES)} (e.g. objective/schedule=linear)"
            )
        fn = SCHEDULES[name]
        accepted = schedule_defaults(fn)
        # An experiment may set another schedule's parameters (ptb sets warmup_steps) and a user
        # switch schedules on the command line: drop those, but a key no schedule knows is a typo.
        elsewhere = set().union(*(schedule_defaults(f) for f in SCHEDULES.values()))
        unknown = set(params) - set(accepted) - elsewhere
        if unknown:
            raise ConfigError(
                f"objective.schedule.{sorted(unknown)[0]} is not a parameter of the "
                f"{name!r} schedule: it takes {sorted(accepted)}"
            )
        self.schedule = ScheduleConfig(name=name, **{k: v for k, v in params.items() if k in accepted})
        try:
            fn(0, **self.schedule.params)
        except (ValueError, TypeError) as err:
            raise ConfigError(f"objective.schedule ({name}): {err}") from None


def schedule_defaults(fn) -> dict[str, Any]:
    """The keyword arguments of a schedule function and their defaults: its config keys."""
    return {p.name: MISSING if p.default is p.empty else p.default
            for p in inspect.signature(fn).parameters.values() if p.name != "step"}


# --- training ----------------------------------------------------------------------------------


@dataclass
class OptimConfig:
    name: str = "adam"  # a key of vae_text.optim.OPTIMIZERS: adam | sgd
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)  # adam
    momentum: float = 0.0  # sgd
    weight_decay: float = 0.0
    clip_norm: float | None = 5.0  # max gradient norm; null disables clipping
    plateau_factor: float | None = None  # multiply lr by this when the val score stops improving
    plateau_patience: int = 1  # the lr decays after more than this many epochs without improvement
    plateau_start_epoch: int = 0  # ... but never before this many epochs are complete
    plateau_reload_best: bool = False  # at each decay, go back to the best weights (best.pt)
    min_lr: float = 0.0

    def __post_init__(self) -> None:
        from vae_text.optim import OPTIMIZERS  # late import: optim imports this module

        _choice("optim.name", self.name, tuple(OPTIMIZERS))
        if not self.lr > 0:
            raise ConfigError(f"optim.lr={self.lr!r} is invalid: it must be > 0")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"optim.momentum={self.momentum!r} is invalid: in [0, 1)")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"optim.betas={list(self.betas)!r} is invalid: two numbers in [0, 1)")
        _positive_or_null("optim.clip_norm", self.clip_norm)
        if self.plateau_factor is not None and not 0 < self.plateau_factor < 1:
            raise ConfigError(
                f"optim.plateau_factor={self.plateau_factor!r} is invalid: in (0, 1), or null"
            )
        for key in ("plateau_patience", "plateau_start_epoch"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 0:
                raise ConfigError(f"optim.{key}={getattr(self, key)!r} is invalid: an integer >= 0")


@dataclass
class TrainConfig:
    batch_size: int = 32  # the global batch: split over the processes of a torchrun/SLURM run
    epochs: int = 10
    max_steps: int | None = None  # stop after this many optimizer steps (whichever comes first)
    early_stopping: int | None = None  # stop after this many epochs without a better val score
    max_minutes: float | None = None  # wall-time budget over all resumed pieces (checked every log_every steps)
    monitor: str = "neg_elbo"  # validation score for best.pt, lr decay, early stopping (or "rec")
    log_every: int = 100  # steps between train/ metric lines
    checkpoint_every: int | None = None  # also save last.pt every N steps (for preemption)
    progress: bool = True  # tqdm bar with loss, rec, KL, beta and tokens/s
    resume: str | None = None  # run directory or checkpoint file (its last.pt) to continue from
    num_threads: int | None = None  # torch CPU threads; null keeps PyTorch's default
    precision: str = "fp32"  # "bf16": the training forward pass under bfloat16 autocast (GPUs)
    max_lr_decays: int | None = None  # stop once the plateau rule has decayed the lr this often

    def __post_init__(self) -> None:
        for key in ("batch_size", "epochs", "log_every"):
            _positive_int(f"train.{key}", getattr(self, key))
        _choice("train.monitor", self.monitor, ("neg_elbo", "rec"))
        _choice("train.precision", self.precision, ("fp32", "bf16"))
        for key in ("max_steps", "early_stopping", "checkpoint_every", "num_threads", "max_lr_decays"):
            if getattr(self, key) is not None:
                _positive_int(f"train.{key}", getattr(self, key))
        _positive_or_null("train.max_minutes", self.max_minutes)


@dataclass
class RemedyConfig:
    """Training procedures against posterior collapse (vae_text.remedies)."""

    # He et al. 2019: encoder-only updates before each decoder step until the encoder's loss stops
    # improving; switched off once validation MI stops rising
    aggressive: bool = False
    aggressive_max_inner: int = 100  # cap of the inner loop
    aggressive_check_every: int = 10  # inner steps between two checks of the encoder's loss
    # Li et al. 2019: this many autoencoder epochs (beta = 0, z = mu) first, then the decoder is
    # re-initialised and train.epochs of VAE follow
    pretrain_epochs: int = 0
    pretrain_converge: bool = False  # the AE phase as a run of its own: best val rec, lr plateau
    # rule, ending at train.max_lr_decays decays (or pretrain_epochs); the VAE starts from its best

    def __post_init__(self) -> None:
        _positive_int("remedy.aggressive_max_inner", self.aggressive_max_inner)
        _positive_int("remedy.aggressive_check_every", self.aggressive_check_every)
        if not isinstance(self.pretrain_epochs, int) or self.pretrain_epochs < 0:
            raise ConfigError(f"remedy.pretrain_epochs={self.pretrain_epochs!r} is invalid: an integer >= 0")


@dataclass
class EvalConfig:
    """The evaluation suite (vae_text.metrics), at the end of training and in vae_text.evaluate."""

    iw_samples: int = 500  # K of the importance-weighted NLL (the field's K; 0: skip it)
    val_iw_samples: int = 0  # training: K of an IW-NLL on valid every epoch (0: skip; MI, AU always run)
    batch_size: int = 64  # sentences per encoder pass
    memory_mb: int = 64  # working memory of one IW decoder chunk: small chunks stay in cache (faster)
    au_threshold: float = 0.01  # a unit is active if Var_x E_q[z_u] >= this
    reconstruct: bool = True  # greedy reconstructions, token accuracy, BLEU
    seed: int = 0  # the posterior noise (train.yaml ties it to the run's seed)
    progress: bool = True  # (train.yaml ties it to train.progress)
    where: typing.ClassVar[str] = "eval."  # the keys' prefix in error messages

    def __post_init__(self) -> None:
        for key in ("iw_samples", "val_iw_samples"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"{self.where}{key}={value!r} is invalid: an integer >= 0 (0 skips it)")
        for key in ("batch_size", "memory_mb"):
            value = getattr(self, key)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{self.where}{key}={value!r} is invalid: a positive integer")
        if not self.au_threshold > 0:
            raise ConfigError(f"{self.where}au_threshold={self.au_threshold!r} is invalid: it must be > 0")


@dataclass
class LoggerConfig:
    name: str = "console"  # "console" (+ metrics.jsonl) or "wandb" (both, and a wandb run)
    project: str = "vae_text"
    entity: str | None = None
    group: str | None = None  # default under Hydra: the sweep
    run_name: str | None = None  # default under Hydra: the job's overrides, or the run directory's name
    tags: list[str] = field(default_factory=list)
    mode: str = "offline"  # wandb mode: offline (default, no network; `wandb sync` later), online or disabled

    def __post_init__(self) -> None:
        if self.name not in ("console", "wandb"):
            raise ConfigError(f"logger.name={self.name!r} is invalid: choose 'console' or 'wandb'")
        if self.mode not in ("offline", "online", "disabled"):
            raise ConfigError(f"logger.mode={self.mode!r} is invalid: offline, online or disabled")


@dataclass
class DecodeConfig:
    decoding: str = "greedy"  # the strategy: greedy | sample | top_k | top_p | beam
    max_len: int = 50  # tokens at most per sentence (<eos> included)
    temperature: float = 1.0  # sampling strategies; 0 means argmax
    top_k: int = 10  # top_k: sample among the k most likely tokens
    top_p: float = 0.9  # top_p: sample from the smallest set holding this probability mass
    beam_size: int = 5
    length_penalty: float = 1.0  # beam: rank by log p / length ** length_penalty (0: raw log p)

    @property
    def strategy(self) -> str:
        """`decoding`, under the name the decoding code reads it by."""
        return self.decoding

    def __post_init__(self) -> None:
        if self.decoding not in STRATEGIES:
            raise ConfigError(f"decoding strategy {self.decoding!r} is unknown: choose one of {list(STRATEGIES)}")
        if self.max_len < 1 or self.beam_size < 1 or self.top_k < 1:
            raise ConfigError("max_len, beam_size and top_k must be >= 1")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ConfigError("temperature must be >= 0 and top_p in (0, 1]")


# --- the three entry points --------------------------------------------------------------------


@dataclass
class TrainRunConfig:
    """`python -m vae_text.train`: conf/train.yaml composed on this schema, checked before any
    data is read."""

    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    remedy: RemedyConfig = field(default_factory=RemedyConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    device: str = "auto"  # auto (CUDA when present, else CPU) | cpu | cuda | cuda:N | mps

    def __post_init__(self) -> None:
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"seed={self.seed!r} is invalid: it must be an integer")
        _device(self.device)
        r = self.remedy
        if self.model.kind == "lm" and (r.aggressive or r.pretrain_epochs):
            raise ConfigError("remedy.aggressive / remedy.pretrain_epochs need a latent: "
                              "model.kind=lm has none")

    @classmethod
    def from_cfg(cls, cfg: DictConfig | dict) -> TrainRunConfig:
        return section(cls, cfg, "")


@dataclass
class EvaluateConfig(EvalConfig):
    """`python -m vae_text.evaluate`: the evaluation suite's keys (flat) and what to evaluate."""

    where: typing.ClassVar[str] = ""  # its keys are top-level
    checkpoint: str = MISSING  # a run directory (its checkpoints/best.pt) or a checkpoint file
    split: str = "test"  # train | valid | test
    data_dir: str | None = None  # folder with the split's file; default: the data.dir trained on
    output: str | None = None  # where to write the JSON (default: eval_<split>.json in the run dir)
    device: str = "auto"
    num_threads: int | None = None  # torch CPU threads (null: PyTorch's default)

    def __post_init__(self) -> None:
        super().__post_init__()
        _choice("split", self.split, SPLITS)
        _device(self.device)


@dataclass
class SampleConfig(DecodeConfig):
    """`python -m vae_text.sample`: the decoding keys (flat) and what to generate."""

    checkpoint: str = MISSING  # a run directory, a checkpoint file or an export folder
    mode: str = "sample"  # sample | reconstruct | interpolate
    n: int = 10  # sample: how many sentences from the prior
    sentences: list[str] = field(default_factory=list)  # reconstruct / interpolate: the inputs ...
    file: str | None = None  # ... or a file with one sentence per line
    steps: int = 5  # interpolate: points from the first sentence to the second, both included
    interpolation: str = "linear"  # linear | slerp
    from_mean: bool = True  # reconstruct from the posterior mean (false: from a posterior sample)
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mode not in ("sample", "reconstruct", "interpolate"):
            raise ConfigError(f"mode={self.mode!r} is invalid: sample, reconstruct or interpolate")
        _device(self.device)


# --- building them from a composed config ------------------------------------------------------


def section(cls: type[T], node: DictConfig | dict | None, prefix: str) -> T:
    """Build dataclass `cls` (and the dataclasses nested in it) from a config node, running their
    checks; an unknown key (added with `+key=`) or a bad value is a one-line `ConfigError`."""
    data = {} if node is None else node
    if isinstance(data, DictConfig):
        data = OmegaConf.to_container(data, resolve=True)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}.{unknown[0]} is not a known key" if prefix else \
            f"{unknown[0]} is not a known top-level key"
        raise ConfigError(f"{where}: valid keys are {sorted(names)}")
    hints = typing.get_type_hints(cls)
    data = dict(data)
    for key, value in data.items():
        inner = _dataclass_of(hints[key])
        if inner is not None and isinstance(value, dict):
            data[key] = section(inner, value, f"{prefix}.{key}" if prefix else key)
        elif isinstance(value, list) and typing.get_origin(hints[key]) is tuple:
            data[key] = tuple(value)
    return cls(**data)


def _options(cls: type) -> set[str]:
    """A registry entry's options: the keyword-only arguments of its __init__."""
    return {p.name for p in inspect.signature(cls.__init__).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY}



def _dataclass_of(hint: Any) -> type | None:
    """The dataclass of a field typed `X` or `X | None`, else None."""
    for t in (hint, *typing.get_args(hint)):
        if isinstance(t, type) and dataclasses.is_dataclass(t):
            return t
    return None


# --- Hydra -------------------------------------------------------------------------------------


def register() -> None:
    """Store the schemas in Hydra's ConfigStore (idempotent). Call it before composing `conf/`:
    the entry points do (`hydra_entry`), and so does the tests' conftest.

    Besides `base_train`, `base_evaluate` and `base_sample` (the first entry of the defaults list
    of train.yaml, evaluate.yaml and sample.yaml), every KL schedule becomes the option
    `objective/schedule=<name>`, its keys and defaults read from the function's signature.
    """
    from hydra.core.config_store import ConfigStore

    from vae_text.objective import SCHEDULES

    store = ConfigStore.instance()
    for name, cls in (("base_train", TrainRunConfig), ("base_evaluate", EvaluateConfig),
                      ("base_sample", SampleConfig)):
        store.store(name=name, node=_open_dicts(OmegaConf.structured(cls), cls))
    for name, fn in SCHEDULES.items():
        store.store(group="objective/schedule", name=name, node={"name": name, **schedule_defaults(fn)})


def _open_dicts(node: DictConfig, cls: type) -> DictConfig:
    """Unset the struct flag of every `dict[str, Any]` field (a schedule's parameters, a family's
    options): any key composes, even without `+`, and the dataclass that owns it checks it."""
    for name, hint in typing.get_type_hints(cls).items():
        if name not in node or OmegaConf.is_missing(node, name) or node[name] is None:
            continue
        inner = _dataclass_of(hint)
        if inner is not None:
            _open_dicts(node[name], inner)
        elif typing.get_origin(hint) is dict and typing.get_args(hint)[1:] == (Any,):
            OmegaConf.set_struct(node[name], False)
    return node


def hydra_entry(main: typing.Callable[[], Any]) -> typing.Callable[[], Any]:
    """The outermost decorator of a `@hydra.main` entry point: registers the schemas, and reports
    a config that does not compose (a misspelt key, a wrong type, an unknown option) as one line
    `error: ...` on stderr with exit status 2, where Hydra alone prints several lines.

    HYDRA_FULL_ERROR=1 is how Hydra hands its exception to the caller instead of printing it; a
    user who set it keeps the full traceback.
    """

    @functools.wraps(main)
    def wrapper() -> Any:
        from hydra.errors import HydraException

        register()
        before = os.environ.get("HYDRA_FULL_ERROR")
        os.environ["HYDRA_FULL_ERROR"] = "1"
        try:
            return main()
        except HydraException as err:
            if before == "1":
                raise
            print(f"error: {compose_error(err)}", file=sys.stderr)
            sys.exit(2)
        finally:
            if before is None:
                os.environ.pop("HYDRA_FULL_ERROR", None)
            else:
                os.environ["HYDRA_FULL_ERROR"] = before

    return wrapper


def compose_error(err: BaseException) -> str:
    """One line for a config Hydra could not compose: the key, and what is wrong with it."""
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

    cause = err.__cause__ if isinstance(err.__cause__, OmegaConfBaseException) else err
    key = getattr(cause, "full_key", None)
    if isinstance(cause, OmegaConfBaseException) and key:
        schema = cause.object_type
        if (isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and isinstance(schema, type)
                and dataclasses.is_dataclass(schema)):
            valid = sorted(f.name for f in dataclasses.fields(schema))
            return f"{key} is not a known key: valid keys are {valid}"
        if isinstance(cause, (ConfigKeyError, ConfigAttributeError)):  # an open dict: schedule, ...
            return f"{key} is not in the config: add a new key with +{key}=..."
        return f"{key} is invalid: {str(cause.msg).splitlines()[0]}"
    head, items = [], []  # e.g. "Could not find 'experiment/x'", "Available options ...", its items
    for line in str(err).splitlines():
        if line.startswith("Config search path"):
            break
        if line.strip():
            (items if line[0].isspace() else head).append(line.strip())
    return "; ".join(head) + (f" {', '.join(items)}" if items else "")


# --- checks ------------------------------------------------------------------------------------


def _choice(key: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is invalid: choose one of {list(allowed)}")


def _positive_int(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{key}={value!r} is invalid: it must be a positive integer")


def _positive_or_null(key: str, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                              or not value > 0):
        raise ConfigError(f"{key}={value!r} is invalid: it must be a number > 0, or null")


def _fraction(key: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ConfigError(f"{key}={value!r} is invalid: it must be in [0, 1)")


def _device(value: Any) -> None:
    if value != "auto" and not str(value).startswith(("cpu", "cuda", "mps")):
        raise ConfigError(f"device={value!r} is invalid: auto, cpu, cuda, cuda:N or mps")
