"""scripts/benchmark.py times the model the config describes, on batches of its own tokenizer."""
import itertools
import random
import subprocess
import sys

import pytest

from conftest import ROOT, tiny_overrides


@pytest.mark.slow
def test_benchmark_uses_the_configured_tokenizer(tmp_path):
    # 62 words over the alphabet {a, b}, and a sentencepiece model of 12 pieces: batches made with
    # the default word tokenizer would hold ids up to 65, past the model's 12-row embedding.
    words = ["".join(w) for n in range(1, 6) for w in itertools.product("ab", repeat=n)]
    rng = random.Random(0)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for split, n in (("train", 90), ("valid", 20), ("test", 20)):
        lines = (" ".join(rng.choices(words, k=rng.randint(3, 9))) for _ in range(n))
        (corpus / f"ptb.{split}.txt").write_text("".join(f" {s} \n" for s in lines))
    overrides = tiny_overrides(corpus, "tokenizer=sentencepiece", "tokenizer.vocab_size=12")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark.py"), *overrides,
                           "--steps", "3", "--warmup", "1"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| 3 steps |" in proc.stdout and "train tokens/s:" in proc.stdout
