"""Every entry of every registry keeps its protocol, and every name a config gives is checked
against its registry (vae_text.run.parts). The tests run over the registries themselves, so a new
encoder, decoder, optimizer, remedy or objective is tested here with no edit (posteriors and
priors: tests/test_latent_protocol.py)."""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch

from vae_text.config import (
    EvaluateConfig,
    ModelConfig,
    ObjectiveConfig,
    OptimConfig,
    RemedyConfig,
    TrainRunConfig,
)
from vae_text.core.errors import ConfigError
from vae_text.data.corpus import Vocab
from vae_text.model.decoders import DECODERS
from vae_text.model.encoders import ENCODERS
from vae_text.model.latent import DiagonalGaussian, StandardNormal
from vae_text.model.textvae import Output, build_model, decoder_inputs
from vae_text.objectives import OBJECTIVES, Objective, StepInput, StepOutput
from vae_text.remedies import REMEDIES, Remedy
from vae_text.run import parts
from vae_text.run.optim import OPTIMIZERS
from vae_text.run.parts import NAMED, Named, check_model, check_names

VOCAB = Vocab(["<pad>", "<bos>", "<eos>", "<unk>", *"abcdefghi"])  # 13 tokens
PAD, BOS, EOS = VOCAB.pad_id, VOCAB.bos_id, VOCAB.eos_id
# Options that fit the small sizes below (heads dividing the widths); any other entry runs with
# its defaults.
TEST_OPTIONS = {"encoder": {"transformer": {"heads": 3}}, "decoder": {"transformer": {"heads": 3}}}


def small_model(encoder: str = "lstm", decoder: str = "lstm"):
    """Embedding 7, encoder 9, latent 5, decoder 12: every width a different size."""
    torch.manual_seed(0)
    cfg = ModelConfig(embed_size=7, encoder_hidden=9, latent_size=5, decoder_hidden=12,
                      encoder=encoder, decoder=decoder,
                      encoder_args=TEST_OPTIONS["encoder"].get(encoder, {}),
                      decoder_args=TEST_OPTIONS["decoder"].get(decoder, {}))
    return build_model(check_model(cfg), VOCAB).eval()


def sentences(*rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded token ids (B, T) and lengths (B,)."""
    tokens = torch.full((len(rows), max(map(len, rows))), PAD)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = torch.tensor(row)
    return tokens, torch.tensor([len(r) for r in rows])


# --- the names of a config ---------------------------------------------------------------------


def _set(settings: TrainRunConfig, key: str, value) -> None:
    where, _, field = key.rpartition(".")
    setattr(functools.reduce(getattr, where.split("."), settings), field, value)


@pytest.mark.parametrize("named", NAMED, ids=[n.key for n in NAMED])
def test_a_misspelt_name_is_one_line_naming_the_key_and_the_choices(named):
    settings = TrainRunConfig()
    _set(settings, named.key, "nonesuch")
    with pytest.raises(ConfigError) as err:
        check_names(settings)
    assert str(err.value) == (f"{named.key}='nonesuch' is unknown: choose one of "
                              f"{sorted(named.registry)}{named.hint}")


@pytest.mark.parametrize("named", [n for n in NAMED if n.args], ids=[n.key for n in NAMED if n.args])
def test_an_option_the_entry_does_not_declare_is_one_line(named):
    settings = TrainRunConfig()
    _set(settings, named.args, {"nonesuch": 1})
    name = functools.reduce(getattr, named.key.split("."), settings)
    with pytest.raises(ConfigError) as err:
        check_names(settings)
    assert str(err.value).startswith(f"{named.args}.nonesuch is not an option of {named.key}={name}: "
                                     f"it takes ")


def test_a_registry_is_one_line_and_a_list_names_one_entry_each(monkeypatch):
    """A registry whose key holds a list (remedies, metrics) is checked name by name."""
    tags = {"short": object, "long": object}
    monkeypatch.setattr(parts, "NAMED", (*NAMED, Named("logger.tags", tags)))
    check_names(TrainRunConfig(logger=dataclasses.replace(TrainRunConfig().logger, tags=["long"])))
    settings = TrainRunConfig(logger=dataclasses.replace(TrainRunConfig().logger,
                                                         tags=["long", "tall"]))
    with pytest.raises(ConfigError, match=r"^logger\.tags='tall' is unknown: choose one of "
                                          r"\['long', 'short'\]$"):
        check_names(settings)


def test_the_parts_of_a_latent_are_not_checked_for_a_language_model():
    check_names(TrainRunConfig(model=ModelConfig(kind="lm", prior="nonesuch", encoder="nonesuch")))


# --- encoders and decoders ---------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ENCODERS))
def test_every_encoder_reads_each_sentence_alone(name):
    """Features (B, out_size) of a sentence are the same alone and padded beside a longer one."""
    model = small_model(encoder=name)
    tokens, lengths = sentences([5, 6, 7, EOS], [8, 9, 10, 11, 12, 6, EOS])
    with torch.no_grad():
        both = model.encoder(tokens, lengths)  # (2, F)
        alone = model.encoder(*sentences([5, 6, 7, EOS]))  # (1, F)
    assert both.shape == (2, model.encoder.out_size)
    torch.testing.assert_close(both[:1], alone)


@pytest.mark.parametrize("name", sorted(DECODERS))
def test_every_decoder_steps_as_it_scores(name):
    """Generation (start, step, reorder) gives the logits training scores with (forward)."""
    model = small_model(decoder=name)
    tokens, _ = sentences([5, 6, 7, EOS], [8, 9, EOS], [10, 11, 12, 5, 6, EOS])
    inputs = decoder_inputs(tokens, BOS, EOS, PAD)  # (3, 6)
    mask = torch.ones_like(inputs, dtype=torch.bool)
    z = torch.randn(3, 5, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        scored = model.decoder(inputs, z, mask).view(3, inputs.shape[1], -1)  # (B, T, V)
        state, stepped = model.decoder.start(z, 3), []
        for t in range(inputs.shape[1]):
            logits, state = model.decoder.step(inputs[:, t], state)
            stepped.append(logits)
        torch.testing.assert_close(torch.stack(stepped, 1), scored, rtol=1e-4, atol=1e-5)
        # reorder: row 0 of the reordered state goes on as row 2 did
        moved = model.decoder.reorder(state, torch.tensor([2, 2, 0]))
        nxt, _ = model.decoder.step(torch.tensor([7, 7, 7]), moved)
        own, _ = model.decoder.step(torch.tensor([7, 7, 7]), state)
    torch.testing.assert_close(nxt[0], own[2], rtol=1e-4, atol=1e-5)
    assert scored.shape[-1] == len(VOCAB)


# --- the loop's parts --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_every_optimizer_descends_a_quadratic(name):
    """f(w) = |w - c|^2 from w = 0, c = (1, -2, 3): 50 steps at lr 0.05 bring it below a tenth."""
    w = torch.nn.Parameter(torch.zeros(3))
    c = torch.tensor([1.0, -2.0, 3.0])
    opt = OPTIMIZERS[name]([w], OptimConfig(name=name), 0.05)
    for _ in range(50):
        loss = (w - c).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (w - c).pow(2).sum().item() < 0.1 * c.pow(2).sum().item()


@pytest.mark.parametrize("name", sorted(REMEDIES))
def test_every_remedy_is_named_as_registered_and_off_by_default(name):
    cls = REMEDIES[name]
    assert issubclass(cls, Remedy) and cls.name == name
    assert cls.from_config(RemedyConfig()) is None  # a default run has no remedy


def shares_agree(objective: type, batch: int = 5, latent: int = 3) -> None:
    """Two processes, holding sentences {0, 1} and {2, .., B-1} of a batch, give shares whose
    losses sum to the loss of the whole batch in one process, and that batch's statistics: the
    objective protocol's promise. `reduce` sums over the two shares as a process group would
    (recorded in rounds until every sum is settled, then returned)."""
    torch.manual_seed(0)
    k = objective(ObjectiveConfig()).samples  # rows: sentence-major, K draws a sentence
    mu, logvar = torch.randn(batch * k, latent), torch.randn(batch * k, latent) * 0.3
    q = DiagonalGaussian(mu, logvar)
    z = q.rsample()  # (B K, Z)
    out = Output(rec=torch.rand(batch * k) * 10 + 1, kl=q.kl(StandardNormal(latent)), posterior=q, z=z)

    def step(rows: slice, reduce) -> object:
        o = objective(ObjectiveConfig())
        part = Output(rec=out.rec[rows], kl=out.kl[rows], posterior=DiagonalGaussian(mu[rows], logvar[rows]),
                      z=z[rows])
        return o(StepInput(out=part, prior=StandardNormal(latent), samples=k, batch_size=batch,
                           share=1.0, step=3, beta=o.beta(3), reduce=reduce,
                           first=(rows.start or 0) // k))

    whole = step(slice(None), lambda t: t)
    shares = [slice(0, 2 * k), slice(2 * k, None)]
    totals: list[torch.Tensor] = []
    for _ in range(3):  # a sum may feed a later one (infovae gathers the codes): until all settle
        seen: list[list[torch.Tensor]] = [[], []]
        for i, rows in enumerate(shares):
            step(rows, _recording(seen[i], totals))
        totals = [a + b for a, b in zip(*seen)]
    results = [step(rows, _replay(totals)) for rows in shares]
    torch.testing.assert_close(results[0].loss + results[1].loss, whole.loss)
    for r in results:
        assert r.stats.keys() >= {"loss", "rec", "kl"}
        # float64 sums of float32 terms (an MMD weighed by 1000 moves in the 7th digit)
        torch.testing.assert_close(r.stats, whole.stats, rtol=1e-6, atol=1e-6)


def _recording(record: list[torch.Tensor], totals: list[torch.Tensor]):
    """A `reduce` that records what it is given and returns the sums of the last round
    (`totals`, in call order), or its input where there is none yet."""

    def reduce(t: torch.Tensor) -> torch.Tensor:
        record.append(t.detach())
        return totals[len(record) - 1] if len(record) <= len(totals) else t

    return reduce


def _replay(values: list[torch.Tensor]):
    """A `reduce` that returns `values` in turn, whatever it is given."""
    given = iter(values)
    return lambda t: next(given)


@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_every_objective_adds_up_over_the_shares_of_a_batch(name):
    shares_agree(OBJECTIVES[name])


def test_the_share_check_catches_a_mean_over_the_process_own_rows():
    """An objective that averages over its own rows (not the whole batch) weighs a sentence by the
    size of its process's share: the check above must refuse it."""

    class ShareMean(Objective):
        name = "share_mean"

        def __call__(self, inp: StepInput) -> StepOutput:
            loss = (inp.out.rec + inp.out.kl.sum(-1)).mean()
            stats = {"loss": inp.reduce(loss.detach()), "rec": inp.reduce(inp.out.rec.sum()),
                     "kl": inp.reduce(inp.out.kl.sum())}
            return StepOutput(loss, stats)

    with pytest.raises(AssertionError):
        shares_agree(ShareMean)


def test_the_evaluate_command_names_its_keys_as_it_takes_them(monkeypatch):
    """An `eval.*` registry key is `eval.<key>` in a training config and `<key>` for the evaluate
    command (its suite keys are top-level). `where` stands in for a key naming an entry."""
    monkeypatch.setattr(parts, "NAMED", (*NAMED, Named("eval.where", {"eval.": object})))
    check_names(TrainRunConfig())  # EvalConfig.where == "eval."
    with pytest.raises(ConfigError, match=r"^where='' is unknown: choose one of \['eval\.'\]$"):
        parts.check_eval(EvaluateConfig(checkpoint="run"))


def test_remedy_keys_are_checked_against_every_remedy_even_while_it_is_off():
    from vae_text.run.parts import check_remedies

    check_remedies(RemedyConfig(aggressive=False, aggressive_max_inner=3, pretrain_epochs=0))
    with pytest.raises(ConfigError) as err:
        check_remedies(RemedyConfig(agressive=True))  # misspelt: no remedy reads it
    assert str(err.value).startswith("remedy.agressive is not an option of any remedy: they take [")
    with pytest.raises(ConfigError, match=r"^remedy.aggressive_max_inner=0 is invalid: an integer >= 1$"):
        check_remedies(RemedyConfig(aggressive_max_inner=0))  # checked although aggressive is off
    with pytest.raises(ConfigError, match=r"^remedy.pretrain_epochs=-1 is invalid: an integer >= 0$"):
        check_remedies(RemedyConfig(pretrain_epochs=-1))
