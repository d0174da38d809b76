"""Property-based tests of the corpus reader: any bytes either read as sentences or raise one
`VaeTextError` that names the file (and the right line); never a traceback."""

import re
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conftest import write_corpus
from vae_text.core.errors import VaeTextError
from vae_text.data.corpus import CONTROL, DataConfig, load_corpus, parse_lines, read_sentences

# deterministic (no flaky CI), no example database written into the checkout, no deadline on a
# shared machine; a few hundred examples of small files run in a few seconds
FAST = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])

# pieces that matter to a line reader: words, every kind of space and line end, NUL and other
# control characters, bytes that are never UTF-8, truncated and valid multi-byte sequences
PIECES = [b"the", b"cat", b"<unk>", b" ", b"  ", b"\t", b"\n", b"\r\n", b"\r", b"\x00", b"\x0b",
          b"\x0c", b"\x1b", b"\x1f", b"\x7f", b"\xc2\x85", b"\xc2\xa0", b"\xe2\x80\xa8", b"\xff",
          b"\xfe", b"\xc3", b"\xc3\xa9", b"\xf0\x9f\x98\x80", b"\xef\xbb\xbf", b"\xed\xa0\x80"]
corpus_bytes = st.one_of(
    st.binary(max_size=300),
    st.lists(st.sampled_from(PIECES), max_size=60).map(b"".join),
    st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")),
)
# mostly good text with now and then a bad piece: the corpora that get as far as training
TEXTISH = [b"the", b"cat", b"dog", b"caf\xc3\xa9", b" ", b"\t", b"\n", b"\r\n"] * 6 + PIECES
nearly_text = st.lists(st.sampled_from(TEXTISH), max_size=80).map(b"".join)


def corpus_lines(text: str) -> list[str]:
    """The reader's lines, written independently: ended by \n, \r\n or \r alone (never U+2028,
    U+2029 or the control characters str.splitlines also takes), a BOM opening a line dropped."""
    lines = re.split(r"\r\n|\r|\n", text)
    return [line[1:] if line.startswith("\ufeff") else line
            for line in (lines[:-1] if lines[-1] == "" else lines)]


def check_read(raw: bytes, path: Path) -> None:
    path.write_bytes(raw)
    try:
        sentences, empty = read_sentences(path)
    except VaeTextError as err:
        message = str(err)
        event(re.split(r" \(| U\+", message.split(": ")[1])[0])  # --hypothesis-show-statistics
        assert message.startswith(f"{path}") and "\n" not in message
        lines = raw.split(b"\n")
        if m := re.match(rf"{re.escape(str(path))}:(\d+): not valid UTF-8 \(byte 0x([0-9a-f]{{2}})\)", message):
            line = lines[int(m[1]) - 1]
            assert bytes([int(m[2], 16)]) in line
            assert b"\n".join(lines[: int(m[1]) - 1]).decode("utf-8") is not None  # earlier lines are fine
        elif m := re.match(rf"{re.escape(str(path))}:(\d+): control character U\+([0-9A-F]{{4}})", message):
            assert chr(int(m[2], 16)) in lines[int(m[1]) - 1].decode("utf-8")
            assert CONTROL.search(b"\n".join(lines[: int(m[1]) - 1]).decode("utf-8")) is None
        else:
            assert "holds no sentences" in message
            assert not any(line.split() for line in corpus_lines(raw.decode("utf-8")))
        return
    event("read")
    text = raw.decode("utf-8")  # a successful read was valid UTF-8 without control characters
    assert CONTROL.search(text) is None
    lines = corpus_lines(text)
    assert sentences == [line.split() for line in lines if line.split()]
    assert sentences and empty == sum(1 for line in lines if not line.split())
    assert all(word and not any(c.isspace() for c in word) for s in sentences for word in s)


@FAST
@given(raw=corpus_bytes)
def test_read_sentences_on_any_bytes(raw):
    with tempfile.TemporaryDirectory() as folder:
        check_read(raw, Path(folder) / "some corpus.txt")


@FAST
@given(rows=st.lists(st.one_of(st.text(max_size=40), st.none(), st.integers()), max_size=8))
def test_parse_lines_on_any_rows(rows):
    try:
        sentences, empty = parse_lines(rows, "corpus[train][text]")
    except VaeTextError as err:
        assert str(err).startswith("corpus[train][text]") and "\n" not in str(err)
        return
    assert all(isinstance(r, str) and CONTROL.search(r) is None for r in rows)
    assert sentences == [r.removeprefix("\ufeff").split() for r in rows if r.removeprefix("\ufeff").split()]


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.one_of(corpus_bytes, nearly_text))
def test_load_corpus_on_any_training_file(raw):
    """The whole path a training run takes: either a corpus or one error naming the train file."""
    with tempfile.TemporaryDirectory() as folder:
        directory = write_corpus(Path(folder) / "c", sizes=(5, 4, 3))
        (directory / "ptb.train.txt").write_bytes(raw)
        try:
            corpus = load_corpus(DataConfig(dir=str(directory), cache_dir=str(directory / "cache")))
        except VaeTextError as err:
            event("error")
            assert str(directory / "ptb.train.txt") in str(err) and "\n" not in str(err)
            return
        event("trained")
        assert len(corpus["train"]) == len(read_sentences(directory / "ptb.train.txt")[0])
        assert len(corpus["valid"]) == 4 and len(corpus["test"]) == 3
