"""Reading sentence-per-line text: files in a folder, a Hugging Face `datasets` dataset, or the
hub's copy of a corpus. Bad input (a missing, empty, unreadable, non-UTF-8 or binary file) is one
`DataError` line naming the file and the fix.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any

from vae_text.config import SPLITS, DataConfig
from vae_text.core.errors import DataError
from vae_text.core.utils import atomic_write, error_line
from vae_text.data.online import (
    cache_only,
    cache_only_if_unreachable,
    fetch_failed,
    hub_unreachable,
    offline_by_choice,
)

log = logging.getLogger("vae_text.data")

# Control characters (Unicode Cc) other than tab and the line ends \n and \r: a NUL byte or an escape
# code means a binary or corrupt file, never a word, and would otherwise train without complaint.
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
BOM = "\ufeff"  # a byte-order mark: dropped where it opens a line (`parse_lines`)
PROGRESS_SECONDS = 10.0  # a data step that runs longer than this says how far it got


# --- reading ------------------------------------------------------------------------------------


def control_error(where: str, text: str, at: int) -> DataError:
    """The error for the control character at `text[at]`: `where` is "file:line" or "dataset row n"."""
    char = text[at]
    column = at - text.rfind("\n", 0, at)
    return DataError(f"{where}: control character U+{ord(char):04X} ({char!r}) at column {column}; "
                     f"a text corpus holds only printable characters, tabs and line breaks: "
                     f"remove it, or point data.dir/data.files at the right file if this one is binary")


def parse_lines(lines, where: str) -> tuple[list[list[str]], int]:
    """Whitespace-split sentences, one per line; empty lines are skipped and counted. A byte-order
    mark (U+FEFF) opening a line (a file saved with one, or such files joined by `cat`) is dropped,
    never a word of its own.
    No sentence at all, a row that is not text or a control character raises `DataError`
    naming `where` (and the row)."""
    sentences, empty = [], 0
    for row, line in enumerate(lines, 1):
        words = line.removeprefix(BOM).split() if isinstance(line, str) else None
        bad = words is not None and CONTROL.search(line)  # str.split() takes \x1c-\x1f for spaces
        if bad:
            raise control_error(f"{where} row {row}", line, bad.start())
        if words:
            sentences.append(words)
        elif words is None:
            raise DataError(f"{where}: holds a {type(line).__name__} where a line of text belongs; "
                            f"choose a text column (data.column)")
        else:
            empty += 1
    if not sentences:
        reason = f"only {empty} empty lines" if empty else "it is empty"
        raise DataError(f"{where}: holds no sentences ({reason}); it must have one sentence per line")
    return sentences, empty


def split_lines(text: str) -> list[str]:
    """The lines of a corpus text: ended by \n, \r\n or \r only (as `datasets` reads a text
    file), never by the other characters `str.splitlines` takes for line ends: U+2028 and U+2029
    inside a line are whitespace between two words (`parse_lines`); \x0b, \x0c, \x1c-\x1e and
    \x85 are control characters, refused (`CONTROL`)."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines[-1] == "":  # the newline that ends the last line opens no line of its own
        lines.pop()
    return lines


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file (`split_lines`). A missing, unreadable or non-UTF-8 file,
    or one with a control character, raises `DataError` naming it (and the line)."""
    path = Path(path)
    raw = file_bytes(path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataError(
            f"{path}:{line}: not valid UTF-8 (byte {raw[err.start]:#04x}); re-encode the file as UTF-8"
        ) from None
    bad = CONTROL.search(text)
    if bad:
        raise control_error(f"{path}:{text.count(chr(10), 0, bad.start()) + 1}", text, bad.start())
    return split_lines(text)


def read_sentences(path: Path) -> tuple[list[list[str]], int]:
    """Sentences of a UTF-8 file, one per line (`read_lines`, then `parse_lines`); an empty file
    raises `DataError` naming it. Linear in the file's size: a 1 MB line reads in a fraction of
    a second."""
    return parse_lines(read_lines(path), str(path))


def file_bytes(path: Path) -> bytes:
    """A file's bytes; a missing or unreadable file raises `DataError` naming it and the fix."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found (expected one sentence per line); "
                        f"check data.dir and data.files") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not a text file; point data.files at the file "
                        f"with one sentence per line") from None
    except PermissionError:
        raise DataError(f"{path}: cannot read it (permission denied); check its permissions") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read it ({err.strerror or err}); check the file and its "
                        f"permissions") from None


_sha256s: dict[tuple[str, int, int], str] = {}  # (path, size, mtime) -> sha256: one read per process


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes (errors as file_bytes'), read once per process while its size
    and modification time stay: a sweep job's identity and the corpus cache key share the read."""
    try:
        stat = path.stat()
    except OSError:
        file_bytes(path)  # the one line naming the file and the fix
        raise
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _sha256s:
        _sha256s[key] = hashlib.sha256(file_bytes(path)).hexdigest()
    return _sha256s[key]


def fetch_from_hub(cfg: DataConfig, directory: Path, key: str = "data.dir") -> None:
    """Write the corpus's split files into `directory` from the Hugging Face hub; an unreachable
    hub is one line at once (vae_text.data.online), naming `key` as the way to point elsewhere."""
    if (reason := hub_unreachable(cfg.hub.id)) is not None:
        raise fetch_failed(cfg, directory, reason, key)
    with cache_only(offline_by_choice()):  # HF_HUB_OFFLINE as it is now, not at `datasets`' import
        if cfg.prepare is not None:  # a benchmark cut from its source dataset (vae_text.data.presets)
            from vae_text.data.presets import prepare

            return prepare(cfg, directory, key)
        hub = cfg.hub
        try:
            import datasets

            ds = datasets.load_dataset(hub.id, data_dir=hub.config, revision=hub.revision)
            tables = {split: ds[hub.splits[split]][hub.column] for split in SPLITS}
        except Exception as err:  # offline, unknown id, missing split or column: all the same fix
            raise fetch_failed(cfg, directory, error_line(err, 160), key) from None
    directory.mkdir(parents=True, exist_ok=True)
    for split, lines in tables.items():
        atomic_write(directory / cfg.files[split], "".join(f" {line.strip()} \n" for line in lines))
    log.info("fetched %s from the Hugging Face hub into %s", hub.id, directory)


def load_hf(cfg: DataConfig) -> Any:
    """The `datasets` dataset of a source=hf corpus (its DatasetDict). When the hub does not
    answer, only the `datasets` cache and local files are read, so either works at once."""
    fix = "check data.name/config/data_dir/revision, or go online (HF_HUB_OFFLINE unset) once to cache it"
    unreachable = None
    try:
        import datasets

        with cache_only_if_unreachable(cfg.name) as unreachable:
            return datasets.load_dataset(cfg.name, cfg.config, data_dir=cfg.data_dir,
                                         data_files=dict(cfg.data_files) if cfg.data_files else None,
                                         revision=cfg.revision)
    except Exception as err:  # offline and not cached, unknown id or config, unreadable files
        not_cached = unreachable and isinstance(err, ConnectionError)  # only the cache was asked
        while err.__cause__ is not None:  # `datasets` wraps the useful error (e.g. UnicodeDecodeError)
            err = err.__cause__
        reason = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:200] if str(err).strip() else ''}"
        if not_cached:
            reason = f"{unreachable}, and it is not in the `datasets` cache"
        raise DataError(f"data.name={cfg.name}: loading it with `datasets` failed ({reason}); {fix}") from None


def load_hf_lines(cfg: DataConfig) -> dict[str, tuple[list, str]]:
    """Each split's `cfg.column` of a `datasets` dataset, with a label for error messages.

    `datasets` keeps its own cache (HF_DATASETS_CACHE) and honours HF_HUB_OFFLINE=1; local files
    load with `data.name=text data.data_files={train: ..., valid: ..., test: ...}`.
    """
    ds = load_hf(cfg)
    out = {}
    for split in SPLITS:
        name = cfg.splits[split]
        if name not in ds:
            raise DataError(f"data.splits.{split}={name!r}: {cfg.name} has no such split (it has "
                            f"{sorted(ds)}); set data.splits.{split}=<one of them>")
        if cfg.column not in ds[name].column_names:
            raise DataError(f"data.column={cfg.column!r}: {cfg.name} split {name!r} has no such column "
                            f"(it has {ds[name].column_names}); set data.column=<one of them>")
        out[split] = (ds[name][cfg.column], f"{cfg.name}[{name}][{cfg.column}]")
    return out



def split_files(cfg: DataConfig) -> dict[str, Path]:
    """The three files of a `source=files` corpus, fetched from the hub first if configured."""
    directory = Path(cfg.dir)
    if not directory.is_dir():
        if cfg.hub is None:
            raise DataError(f"data directory {directory.resolve()} does not exist; put "
                            f"{', '.join(cfg.files.values())} there or set data.dir=<folder>")
        fetch_from_hub(cfg, directory)
    paths = {s: directory / cfg.files[s] for s in SPLITS}
    for split, path in paths.items():
        if not path.is_file():
            raise DataError(f"{path}: file not found; the {split} split must be there "
                            f"(or set data.files.{split}=<file name>)")
    return paths


def read_split(cfg: DataConfig, split: str) -> tuple[list[list[str]], int, str]:
    """One split's sentences, empty-line count and a label naming where it came from."""
    if cfg.source == "hf":
        lines, where = load_hf_lines(cfg)[split]
        return (*parse_lines(lines, where), where)
    if cfg.hub is not None and not Path(cfg.dir).is_dir():
        fetch_from_hub(cfg, Path(cfg.dir))
    path = Path(cfg.dir) / cfg.files[split]
    return (*read_sentences(path), str(path))


def read_labels(cfg: DataConfig, split: str) -> list[str] | None:
    """One label per sentence of `read_split(cfg, split)` (same order, empty lines skipped alike),
    or None when the corpus has none: source=hf reads data.label_column, source=files the file
    data.label_files[split] in data.dir (one label per line, line for line with the text file)."""
    if cfg.source == "hf":
        if cfg.label_column is None:
            return None
        name = cfg.splits[split]
        ds = load_hf(cfg)[name]
        if cfg.label_column not in ds.column_names:
            raise DataError(f"data.label_column={cfg.label_column!r}: {cfg.name} split {name!r} has "
                            f"no such column (it has {ds.column_names})")
        rows = zip(ds[cfg.column], ds[cfg.label_column])
        return [str(label) for text, label in rows if isinstance(text, str) and text.removeprefix(BOM).split()]
    if cfg.label_files is None:
        return None
    if cfg.hub is not None and not Path(cfg.dir).is_dir():
        fetch_from_hub(cfg, Path(cfg.dir))
    text_path, path = Path(cfg.dir) / cfg.files[split], Path(cfg.dir) / cfg.label_files[split]
    lines, labels = read_lines(text_path), [label.removeprefix(BOM) for label in read_lines(path)]
    if len(labels) != len(lines):
        raise DataError(f"{path}: {len(labels)} labels for the {len(lines)} lines of {text_path}; "
                        f"it must hold one label per line of the text")
    return [label.strip() for line, label in zip(lines, labels) if line.removeprefix(BOM).split()]
