"""The configs of the loop (optimizer, training, remedies, evaluation, logging, decoding)
and of the three entry points."""

from __future__ import annotations

import typing
from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING, DictConfig

from vae_text.config.checks import (
    _choice,
    _device,
    _module_names,
    _positive_int,
    _positive_or_null,
    section,
)
from vae_text.config.data import SPLITS, STRATEGIES, DataConfig, TokenizerConfig
from vae_text.config.model import ModelConfig, ObjectiveConfig
from vae_text.core.errors import ConfigError

# --- training ----------------------------------------------------------------------------------


@dataclass
class OptimConfig:
    name: str = "adam"  # a key of vae_text.run.optim.OPTIMIZERS: adam | sgd (checked by vae_text.run.parts)
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
        if not self.lr > 0:
            raise ConfigError(f"optim.lr={self.lr!r} is invalid: it must be > 0")
        for key in ("weight_decay", "min_lr"):
            if not getattr(self, key) >= 0:
                raise ConfigError(f"optim.{key}={getattr(self, key)!r} is invalid: it must be >= 0")
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"optim.momentum={self.momentum!r} is invalid: in [0, 1)")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"optim.betas={list(self.betas)!r} is invalid: two numbers in [0, 1)")
        _positive_or_null("optim.clip_norm", self.clip_norm)
        if self.plateau_factor is not None and not 0 < self.plateau_factor < 1:
            raise ConfigError(f"optim.plateau_factor={self.plateau_factor!r} is invalid: in (0, 1), or null")
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
    num_threads: int | None = None  # torch CPU threads; null: the physical cores available to the process
    precision: str = "fp32"  # "bf16": the training forward pass under bfloat16 autocast (GPUs)
    max_lr_decays: int | None = None  # stop once the plateau rule has decayed the lr this often
    compile: str = "none"  # the step's forward: none (eager) | compile (torch.compile) | cudagraphs (CUDA)

    def __post_init__(self) -> None:
        for key in ("batch_size", "epochs", "log_every"):
            _positive_int(f"train.{key}", getattr(self, key))
        _choice("train.monitor", self.monitor, ("neg_elbo", "rec"))
        _choice("train.precision", self.precision, ("fp32", "bf16"))
        _choice("train.compile", self.compile, ("none", "compile", "cudagraphs"))  # vae_text.run.compiled
        for key in ("max_steps", "early_stopping", "checkpoint_every", "num_threads", "max_lr_decays"):
            if getattr(self, key) is not None:
                _positive_int(f"train.{key}", getattr(self, key))
        _positive_or_null("train.max_minutes", self.max_minutes)


class RemedyConfig(dict):
    """`remedy`, flat as users type it (`remedy.pretrain_epochs=1`, `remedy.aggressive=true`, or a
    file of conf/remedy/ composed with `+remedy=<name>`): every key is an option of a registered
    remedy (vae_text.remedies), named as its `__init__` keyword, or the switch that turns it on.
    A dict, not a dataclass, so that a remedy of the user's own code brings its own keys; the
    defaults are the remedies' `__init__` defaults, and `vae_text.run.parts` checks the keys."""

    def __getattr__(self, key: str) -> Any:  # remedy.pretrain_epochs as an attribute too
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value


@dataclass
class EvalConfig:
    """The evaluation suite (vae_text.metrics), at the end of training and in vae_text.evaluate."""

    iw_samples: int = 500  # K of the importance-weighted NLL (the field's K; 0: skip it)
    val_iw_samples: int = 0  # training: K of an IW-NLL on valid every epoch (0: skip; MI, AU always run)
    batch_size: int = 64  # sentences per encoder pass
    memory_mb: int | None = None  # one IW decoder chunk's memory (null: from the device, metrics.iw)
    au_threshold: float = 0.01  # a unit is active if Var_x E_q[z_u] >= this
    # MI over a seeded subset of at most this many sentences (null: the whole set, the field's
    # estimator; a capped MI is at most log of this and not comparable). Its cost grows as N^2
    # times a log-density: an IAF's whole-set MI on PTB valid takes ~4 minutes of one CPU core.
    mi_max_sentences: int | None = None
    # the metrics computed, by registered name (vae_text.metrics.METRICS; a user's own metric
    # registers there too); each runs where it applies (no MI for a language model, no IW-NLL at
    # iw_samples=0, reconstructions in the full suite only). rec_mean (rec at z = the posterior
    # mean) is left out by default: it adds a decoder pass per batch to every validation.
    metrics: tuple[str, ...] = ("elbo", "mi", "au", "iw_nll", "reconstruction")
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
            if not (isinstance(value, int) and value > 0 or value is None and key == "memory_mb"):
                raise ConfigError(f"{self.where}{key}={value!r} is invalid: a positive integer"
                                  + (" (or null: from the device)" if key == "memory_mb" else ""))
        if not self.au_threshold > 0:
            raise ConfigError(f"{self.where}au_threshold={self.au_threshold!r} is invalid: it must be > 0")
        names = self.metrics
        if (not isinstance(names, (tuple, list)) or not names
                or not all(isinstance(n, str) for n in names) or len(set(names)) != len(names)):
            raise ConfigError(f"{self.where}metrics={names!r} is invalid: a non-empty list of distinct "
                              f"metric names, e.g. [elbo, mi, au, iw_nll, reconstruction]")
        if "elbo" not in names:  # every encoder pass computes it anyway; validation monitors it
            raise ConfigError(f"{self.where}metrics={list(names)!r} lacks elbo: validation's monitor "
                              f"and the results read its rec / neg_elbo; add it")
        if self.mi_max_sentences is not None and (not isinstance(self.mi_max_sentences, int)
                                                  or self.mi_max_sentences < 2):
            raise ConfigError(f"{self.where}mi_max_sentences={self.mi_max_sentences!r} is invalid: "
                              f"an integer >= 2, or null for the whole set")


@dataclass
class GenerationConfig:
    """The generation suite (vae_text.generation.suite, vae_text.generation.probes): `python -m vae_text.evaluate
    checkpoint=... generation=true gen.samples=200`. Definitions and papers: docs/generation.md."""

    samples: int = 1000  # N sentences from the prior, decoded with `decoding` (seeded by `seed`)
    source: str = "model"  # model: the N prior samples; data: N real training sentences (a seeded
    #                        subset) in their place, the row a model's samples are read against
    seed: int = 0
    decoding: str = "sample"  # ancestral sampling at temperature 1: the distribution the model defines
    temperature: float = 1.0
    max_len: int = 50  # tokens at most per sample (<eos> included)
    batch_size: int = 100  # sentences decoded (and scored) at once
    reference_lm: str | None = None  # forward PPL: a model=lm run dir, checkpoint or export (null: skipped)
    # reverse PPL (Zhao et al. 2018): an LSTM LM (build_model, kind=lm) trained on M samples
    reverse_samples: int | None = None  # M (null: the N samples above)
    reverse_epochs: int = 5
    reverse_embed: int = 64
    reverse_hidden: int = 128
    reverse_lr: float = 3e-3
    reverse_batch_size: int = 32
    self_bleu_samples: int = 200  # self-BLEU over the first this many samples (each against the rest)
    # latent space
    probe_sentences: int = 10000  # train sentences (at most; a seeded random subset) for the probes and neighbours
    length_buckets: int = 4  # the length probe's classes: quantiles of the train lengths
    probe_steps: int = 300  # full-batch optimisation steps of each logistic regression
    interpolation_pairs: int = 20  # test sentence pairs (consecutive sentences of the test split)
    interpolation_steps: int = 10  # points on each path, endpoints included
    interpolation: str = "linear"  # linear | slerp
    neighbours: int = 5  # test sentences shown with their nearest train sentences in mu-space
    neighbours_k: int = 3

    def __post_init__(self) -> None:
        for key in ("samples", "max_len", "batch_size", "reverse_epochs", "reverse_embed",
                    "reverse_hidden", "reverse_batch_size", "probe_sentences",
                    "probe_steps", "interpolation_pairs", "neighbours_k"):
            _positive_int(f"gen.{key}", getattr(self, key))
        if self.reverse_samples is not None:
            _positive_int("gen.reverse_samples", self.reverse_samples)
        for key in ("self_bleu_samples", "length_buckets", "interpolation_steps"):  # each sample
            value = getattr(self, key)  # against the others; two classes; both ends of a path
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise ConfigError(f"gen.{key}={value!r} is invalid: an integer >= 2")
        if not isinstance(self.neighbours, int) or self.neighbours < 0:
            raise ConfigError(f"gen.neighbours={self.neighbours!r} is invalid: an integer >= 0")
        _choice("gen.decoding", self.decoding, STRATEGIES)
        _choice("gen.source", self.source, ("model", "data"))
        _choice("gen.interpolation", self.interpolation, ("linear", "slerp"))
        if self.temperature < 0 or not self.reverse_lr > 0:
            raise ConfigError("gen.temperature must be >= 0 and gen.reverse_lr > 0")


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
        for key in ("max_len", "beam_size", "top_k"):
            _positive_int(key, getattr(self, key))
        if not self.temperature >= 0:
            raise ConfigError(f"temperature={self.temperature!r} is invalid: it must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p={self.top_p!r} is invalid: it must be in (0, 1]")


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
    remedy: dict[str, Any] = field(default_factory=dict)  # RemedyConfig: the remedies' options
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    device: str = "auto"  # auto (CUDA when present, else CPU) | cpu | cuda | cuda:N | mps
    plugins: list[str] = field(default_factory=list)  # modules of your own parts, imported first

    def __post_init__(self) -> None:
        _module_names("plugins", self.plugins)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ConfigError(f"seed={self.seed!r} is invalid: it must be an integer")
        _device(self.device)
        if not isinstance(self.remedy, dict):
            raise ConfigError(f"remedy={self.remedy!r} is invalid: a mapping of the remedies' options")
        self.remedy = RemedyConfig(self.remedy)

    @classmethod
    def from_cfg(cls, cfg: DictConfig | dict) -> TrainRunConfig:
        """The values checked; the names of parts are checked by vae_text.run.parts.train_settings,
        which also imports the plugins first."""
        return section(cls, cfg, "")


@dataclass
class EvaluateConfig(EvalConfig):
    """`python -m vae_text.evaluate`: the evaluation suite's keys (flat) and what to evaluate."""

    where: typing.ClassVar[str] = ""  # its keys are top-level
    checkpoint: str = MISSING  # a run directory (its checkpoints/best.pt), a checkpoint file or an export folder
    split: str = "test"  # train | valid | test
    data_dir: str | None = None  # folder with the split's file; default: the data.dir trained on
    output: str | None = None  # where to write the JSON (default: eval_<split>_k<K>.json in the run dir)
    overwrite: bool = False  # replace an existing output file
    max_sentences: int | None = None  # a quick look: only the split's first N sentences
    device: str = "auto"
    num_threads: int | None = None  # torch CPU threads (null: PyTorch's default)
    generation: bool = False  # also the generation suite (samples, diversity, probes): its keys in gen.*
    gen: GenerationConfig = field(default_factory=GenerationConfig)
    plugins: list[str] = field(default_factory=list)  # modules of your own parts (also the run's own)

    def __post_init__(self) -> None:
        super().__post_init__()
        _module_names("plugins", self.plugins)
        _need_checkpoint(self.checkpoint)
        _choice("split", self.split, SPLITS)
        _device(self.device)
        for key in ("max_sentences", "num_threads"):
            if getattr(self, key) is not None:
                _positive_int(key, getattr(self, key))


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
    num_threads: int | None = None  # torch CPU threads (null: PyTorch's default)
    plugins: list[str] = field(default_factory=list)  # modules of your own parts (also the run's own)

    def __post_init__(self) -> None:
        super().__post_init__()
        _module_names("plugins", self.plugins)
        _need_checkpoint(self.checkpoint)
        if self.num_threads is not None:
            _positive_int("num_threads", self.num_threads)
        if self.mode not in ("sample", "reconstruct", "interpolate"):
            raise ConfigError(f"mode={self.mode!r} is invalid: sample, reconstruct or interpolate")
        _positive_int("n", self.n)
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 2:
            raise ConfigError(f"steps={self.steps!r} is invalid: an integer >= 2 (both ends included)")
        _choice("interpolation", self.interpolation, ("linear", "slerp"))
        _device(self.device)


def _need_checkpoint(value: str) -> None:
    if value in (MISSING, None, ""):
        raise ConfigError("checkpoint= is missing: give a run directory, a checkpoint file or an "
                          "export folder (checkpoint=outputs/<date>/<time>)")
