"""Whether the Hugging Face hub answers, asked once and quickly before `datasets` is asked to
download from it.

Offline, `datasets` retries each request with back-off (about 30 s and two dozen warning lines
before it gives up). One HEAD request with a short timeout tells the same thing at once, so a
missing corpus is reported as one line in a few seconds. Proxies set in the environment
(HTTPS_PROXY) are used as `datasets` would use them; with HF_HUB_OFFLINE=1 nothing is asked:
`datasets` then reads only its cache.
"""

from __future__ import annotations

import contextlib
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from vae_text.config import SPLITS, DataConfig
from vae_text.core.errors import DataError

PROBE_SECONDS = 3.0  # a reachable hub answers a HEAD request well within this
DEFAULT_ENDPOINT = "https://huggingface.co"


def hub_endpoint() -> str:
    """The hub `huggingface_hub` talks to: HF_ENDPOINT (a mirror) or huggingface.co."""
    return os.environ.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/")


def _probe(endpoint: str, timeout: float) -> str | None:
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return None  # it answered: an HTTP status, even an error, means it is reachable
    except (OSError, ValueError) as err:  # URLError, refused, timed out, DNS; a malformed URL
        reason = getattr(err, "reason", err)
        return f"{endpoint} is unreachable: {str(reason)[:120] or type(err).__name__}"
    return None


def offline_by_choice() -> bool:
    """HF_HUB_OFFLINE is set now (read at each call: `datasets` reads it once, at its import, so a
    notebook that sets it later would still be retried against the hub)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def hub_unreachable(repo: str, timeout: float = PROBE_SECONDS) -> str | None:
    """Why `repo` cannot be fetched now (the hub does not answer), or None when it can be tried:
    the hub answers, HF_HUB_OFFLINE is set (`datasets` reads its cache), or `repo` is a local
    folder. Asked anew each time (it costs one round trip): a notebook that goes online is heard."""
    if offline_by_choice():
        return None
    if Path(repo).is_dir():
        return None
    return _probe(hub_endpoint(), timeout)


def fetch_failed(cfg: DataConfig, directory: Path, reason: str, key: str = "data.dir") -> DataError:
    """The one-line error for a corpus folder that is missing and could not be fetched from the
    hub: the files to put there, the key (`key=`, as the command spells it) to point elsewhere."""
    hub = cfg.hub
    return DataError(f"data directory {directory} is missing and fetching {hub.id} from the Hugging "
                     f"Face hub failed ({reason}); fix: put {', '.join(cfg.files[s] for s in SPLITS)} "
                     f"in {directory} (or set {key}=<folder with them>), or go online so `datasets` "
                     f"can fetch {hub.id} (it is then kept in {directory})")


@contextlib.contextmanager
def cache_only(on: bool = True) -> Iterator[None]:
    """`datasets` reads only its cache and local files while inside (when `on`): a cached dataset
    or local `data_files` load at once, a missing one fails at once (instead of half a minute of
    retries). `datasets` reads HF_HUB_OFFLINE once, at its import; this is how a later choice, or
    a hub found unreachable now, reaches it."""
    if not on:
        yield
        return
    import datasets

    before = datasets.config.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE = before


@contextlib.contextmanager
def cache_only_if_unreachable(name: str) -> Iterator[str | None]:
    """cache_only while inside if HF_HUB_OFFLINE is set now or the hub does not answer now.
    Yields why the hub is not asked, or None."""
    reason = "HF_HUB_OFFLINE is set" if offline_by_choice() else hub_unreachable(name)
    with cache_only(reason is not None):
        yield reason
