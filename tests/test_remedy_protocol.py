"""The remedy protocol, over every entry of REMEDIES: each is built from its config switch (and its
conf/remedy/<name>.yaml), gets what it declares it needs, runs its hooks on a loop that offers
exactly `vae_text.remedies.Loop` and nothing of the trainer, keeps its state through a round trip;
a resume with another remedy set is refused in one line."""

from __future__ import annotations

import inspect

import pytest
import torch

from conftest import CONF, compose_cfg, tiny_overrides
from vae_text.config import ModelConfig, RemedyConfig, TrainRunConfig
from vae_text.core.errors import CheckpointError, ConfigError
from vae_text.data.corpus import Vocab
from vae_text.model.textvae import build_model
from vae_text.remedies import (
    NEEDS,
    REMEDIES,
    Loop,
    Phase,
    Remedy,
    build_remedies,
    check_needs,
    keys,
)
from vae_text.run.parts import train_settings
from vae_text.train import train

VOCAB = Vocab(["<pad>", "<bos>", "<eos>", "<unk>"] + [f"w{i}" for i in range(15)])  # 19 words
LOOP_NAMES = {n for n in vars(Loop) if not n.startswith("_")} | set(Loop.__annotations__)


class StrictLoop:
    """Exactly the names of `Loop` (slots: a remedy reaching for anything else fails), on a small
    model (batch 5, embed 7, encoder 9, latent 4, decoder 11) with Adam."""

    __slots__ = ("model", "seed", "step", "epoch", "phase_epochs", "phase", "calls", "_opt", "_batch")

    def __init__(self):
        torch.manual_seed(0)
        self.model = build_model(ModelConfig(embed_size=7, encoder_hidden=9, latent_size=4,
                                             decoder_hidden=11), VOCAB)
        self.seed, self.step, self.epoch, self.phase_epochs, self.phase = 3, 0, 0, 0, None
        self.calls: list[str] = []
        self._opt = torch.optim.Adam(self.model.parameters(), lr=0.05)
        lengths = torch.tensor([4, 6, 3, 5, 2])
        tokens = torch.randint(4, 19, (5, 6)) * (torch.arange(6) < lengths[:, None] - 1)
        tokens[torch.arange(5), lengths - 1] = 2
        self._batch = (tokens, lengths)

    def loss_of(self, batch, noise_seed):
        out = self.model(*batch, generator=torch.Generator().manual_seed(noise_seed))
        loss = (out.rec + out.kl.sum(-1)).mean()
        return loss, loss.item()

    def inner_batch(self, i):
        return self._batch, i + 1

    def optimize(self, loss, part=None):
        from vae_text.remedies import update_only

        self._opt.zero_grad(set_to_none=True)
        loss.backward()
        if part is not None:
            update_only(self.model, part)
        self._opt.step()
        self.calls.append(f"optimize:{part}")

    def save(self, name):
        self.calls.append(f"save:{name}")

    def load_best(self):
        self.calls.append("load_best")

    def new_phase(self):
        self.calls.append("new_phase")

    def out_of_lr_decays(self):
        return False


def switched_on(cls: type[Remedy]) -> RemedyConfig:
    return RemedyConfig({cls.switch: 1})  # a truthy switch, the options at their defaults


def test_the_strict_loop_is_the_protocol():
    public = {n for n in dir(StrictLoop) if not n.startswith("_")} - {"calls"}
    assert public == LOOP_NAMES


@pytest.mark.parametrize("name", sorted(REMEDIES))
def test_every_remedy_is_configured_declared_and_runs_its_hooks_on_the_loop_alone(name, corpus_dir):
    cls = REMEDIES[name]
    assert cls.name == name and set(cls.needs) <= set(NEEDS)
    # its keys are its switch and its __init__'s keywords, each with a default (off by default)
    assert keys(cls) == [cls.switch] + [k for k in inspect.signature(cls.__init__).parameters
                                        if k not in ("self", cls.switch)]
    assert all(p.default is not p.empty for p in
               list(inspect.signature(cls.__init__).parameters.values())[1:])
    assert cls.from_config(RemedyConfig()) is None
    assert [type(r) for r in build_remedies(switched_on(cls))] == [cls]
    # its conf/remedy file turns it on, and it composes with the others
    assert (CONF / "remedy" / f"{name}.yaml").is_file()
    on = TrainRunConfig.from_cfg(compose_cfg(tiny_overrides(corpus_dir, f"+remedy={name}")))
    assert [r.name for r in build_remedies(on.remedy)] == [name]
    every = TrainRunConfig.from_cfg(compose_cfg(tiny_overrides(
        corpus_dir, f"+remedy=[{','.join(sorted(REMEDIES))}]")))
    assert {r.name for r in build_remedies(every.remedy)} == set(REMEDIES)
    if {"latent", "encoder"} & set(cls.needs):
        with pytest.raises(ConfigError, match=f"remedy.{cls.switch} .*model.kind=lm has none"):
            train_settings(compose_cfg(tiny_overrides(corpus_dir, "model=lm", f"+remedy={name}")))

    remedy, loop = cls.from_config(switched_on(cls)), StrictLoop()
    remedy.start(loop)
    loop.phase = remedy.phase()
    assert loop.phase is None or isinstance(loop.phase, Phase)
    assert isinstance(remedy.beta(loop, 0.7), float)
    stats = remedy.before_step(loop)
    assert all(isinstance(v, (int, float)) for v in stats.values())
    loss, _ = loop.loss_of(loop._batch, 0)
    loss.backward()
    remedy.after_backward(loop)
    metrics = {"mi": 0.4, "rec": 30.0, "neg_elbo": 31.0}
    remedy.after_validation(loop, metrics, True)
    loop.epoch = loop.phase_epochs = loop.step = 50
    remedy.end_epoch(loop)
    state = remedy.state_dict()
    again = cls.from_config(switched_on(cls))
    again.load_state_dict(state)
    assert again.state_dict() == state


def test_pretraining_on_the_loop_is_an_autoencoder_phase_then_a_fresh_decoder():
    remedy, loop = REMEDIES["pretrain"].from_config(RemedyConfig(pretrain_epochs=2)), StrictLoop()
    remedy.start(loop)
    assert loop.model.use_mean and remedy.phase() == Phase("pretraining", 2, None)
    assert remedy.beta(loop, 0.7) == 0.0
    loop.phase_epochs = 1
    remedy.end_epoch(loop)  # one of its two epochs: nothing yet
    assert loop.calls == [] and remedy.phase() is not None
    decoder = [p.detach().clone() for p in loop.model.decoder.parameters()]
    loop.phase_epochs = 2
    remedy.end_epoch(loop)
    assert loop.calls == ["save:pretrained.pt", "new_phase"] and remedy.phase() is None
    assert remedy.beta(loop, 0.7) == 0.7 and not loop.model.use_mean
    assert all(not torch.equal(a, b) for a, b in zip(decoder, loop.model.decoder.parameters()))


def test_aggressive_on_the_loop_steps_the_encoder_alone_then_the_decoder_alone():
    remedy, loop = REMEDIES["aggressive"].from_config(
        RemedyConfig(aggressive=True, aggressive_max_inner=6, aggressive_check_every=2)), StrictLoop()
    decoder = [p.detach().clone() for p in loop.model.decoder.parameters()]
    steps = remedy.before_step(loop)["inner_steps"]
    assert 2 <= steps <= 6 and loop.calls == ["optimize:encoder"] * steps
    assert all(torch.equal(a, b) for a, b in zip(decoder, loop.model.decoder.parameters()))
    loss, _ = loop.loss_of(loop._batch, 0)
    loss.backward()
    remedy.after_backward(loop)
    assert all(p.grad is None for p in loop.model.encoder_parameters())
    assert all(p.grad is not None for p in loop.model.decoder.parameters())
    loop.phase = Phase("pretraining", 1, None)  # in another remedy's phase it stands aside
    assert remedy.before_step(loop) == {"inner_steps": 0}


def test_needs_are_checked_in_one_line():
    class Phased(Remedy):
        name, switch, needs = "phased", "phased", ("phase",)

    class Odd(Remedy):
        name, switch, needs = "odd", "odd", ("telepathy",)

    with pytest.raises(ConfigError, match="both need a phase of their own: turn one off"):
        check_needs([Phased(), Phased()], "vae")
    with pytest.raises(ConfigError, match="needs 'telepathy', which no loop provides"):
        check_needs([Odd()], "vae")
    check_needs([Phased()], "lm")  # a phase needs no latent


def test_a_resume_with_another_remedy_set_is_refused_in_one_line(corpus_dir, tmp_path):
    train(compose_cfg(tiny_overrides(corpus_dir, "remedy.pretrain_epochs=1", "train.max_steps=4")),
          tmp_path / "a")
    cases = [("+remedy=[pretrain,aggressive]", r"\['pretrain'\] but \['aggressive', 'pretrain'\] "
                                               r"now \(aggressive added\)"),
             ("remedy.pretrain_epochs=0", r"\['pretrain'\] but none now \(pretrain removed\)")]
    for i, (override, message) in enumerate(cases):
        with pytest.raises(CheckpointError, match=message) as err:
            train(compose_cfg(tiny_overrides(corpus_dir, override, "train.max_steps=8",
                                             f"train.resume={tmp_path / 'a'}")), tmp_path / f"b{i}")
        assert "\n" not in str(err.value)
