"""StepInputs for the objectives' tests, built as the loop builds them: a tiny real model run on a
batch (K draws a sentence, sentence-major rows) or synthetic tensors; and two processes' shares
of one batch, with the protocol's sum over processes played out in one process."""

from __future__ import annotations

import torch

from vae_text.config import ModelConfig, ObjectiveConfig, objective_options
from vae_text.core.options import check_values
from vae_text.data.corpus import Vocab
from vae_text.model.textvae import Output, build_model
from vae_text.objectives import StepInput

EOS = 2
V = 23  # vocabulary; batch 5, embed 7, encoder 9, latent 4, decoder 11: all different
VOCAB = Vocab(["<pad>", "<bos>", "<eos>", "<unk>"] + [f"w{i}" for i in range(V - 4)])
LENGTHS = [3, 8, 5, 1, 6]


def objective_cfg(schedule: str = "constant", **kw) -> ObjectiveConfig:
    return ObjectiveConfig(schedule={"name": schedule}, **kw)


def configured(cls: type, **args):
    """An objective built as a config builds it: its options checked against their declarations
    (as vae_text.run.parts checks `objective.args`), then the objective made."""
    check_values(objective_options(cls), args, "objective.args")
    return cls(objective_cfg(), **args)


def tiny_model(seed: int = 0, **kw):
    torch.manual_seed(seed)
    base = dict(embed_size=7, encoder_hidden=9, latent_size=4, decoder_hidden=11)
    return build_model(ModelConfig(**{**base, **kw}), VOCAB)


def batch(n: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n padded sentences (n, T) and their lengths (n,)."""
    g = torch.Generator().manual_seed(seed)
    sents = [torch.randint(4, V, (k,), generator=g).tolist() + [EOS] for k in LENGTHS[:n]]
    lengths = torch.tensor([len(s) for s in sents])
    tokens = torch.zeros(n, int(lengths.max()), dtype=torch.long)
    for i, s in enumerate(sents):
        tokens[i, : len(s)] = torch.tensor(s)
    return tokens, lengths


def run(model, tokens, lengths, samples: int = 1, eps: torch.Tensor | None = None,
        seed: int = 1) -> Output:
    """The model on every sentence repeated `samples` times, sentence-major (row r K + k is
    sentence r's k-th draw), with noise `eps` (rows, noise_size) drawn per row unless given."""
    tokens, lengths = tokens.repeat_interleave(samples, 0), lengths.repeat_interleave(samples, 0)
    if eps is None:
        g = torch.Generator().manual_seed(seed)
        eps = torch.randn(len(tokens), model.noise_size, generator=g)
    return model(tokens, lengths, eps=eps)


def step_input(out: Output, prior=None, samples: int = 1, batch_size: int | None = None,
               step: int = 0, beta: float = 1.0, share: float = 1.0, reduce=None,
               first: int = 0) -> StepInput:
    return StepInput(out=out, prior=prior, samples=samples,
                     batch_size=out.rec.shape[0] // samples if batch_size is None else batch_size,
                     share=share, step=step, beta=beta,
                     reduce=reduce or (lambda t: t.detach().to("cpu", torch.float64)), first=first)


def two_processes(objective, outs: list[Output], prior, batch_size: int, samples: int = 1, **kw):
    """Each share's StepOutput as with two processes, the shares holding consecutive sentences:
    rounds of passes record what each share sums over processes and answer every `reduce` with
    the element-wise sums of the round before (a sum may feed a later one: infovae gathers the
    codes before its statistics), until they settle; then a last pass gives the outputs."""
    firsts = [sum(o.rec.shape[0] for o in outs[:s]) // samples for s in range(len(outs))]
    totals: list[torch.Tensor] = []

    def reduce_for(seen: list):
        def reduce(t):
            seen.append(t.detach().to("cpu", torch.float64))
            return totals[len(seen) - 1] if len(seen) <= len(totals) else seen[-1]
        return reduce

    for _ in range(3):
        seen: list[list] = [[] for _ in outs]
        for out, first, record in zip(outs, firsts, seen):
            objective(step_input(out, prior, samples, batch_size, reduce=reduce_for(record),
                                 first=first, **kw))
        totals = [sum(parts) for parts in zip(*seen)]
    return [objective(step_input(out, prior, samples, batch_size, reduce=reduce_for([]),
                                 first=first, **kw)) for out, first in zip(outs, firsts)]


def rows(out: Output, index) -> Output:
    """The rows `index` of a model output: one process's share of it."""
    return Output(out.rec[index], out.kl[index], out.posterior.index(index), out.z[index])
