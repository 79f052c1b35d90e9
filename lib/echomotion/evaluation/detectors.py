"""The protocol's detector networks (StyleGAN-V's TorchScript Inception and I3D): from a
local file, or downloaded once into a cache.

A detector is found, in order: at ``path`` when that file exists; in the cache
(``cache_dir``, else ``$ECHOMOTION_CACHE``, else ``~/.cache/echomotion``) under the last
part of ``url``'s path; else downloaded from ``url`` into the cache (a temporary file
renamed into place once complete and, when ``sha256`` is given, verified). Without a
network (or with ``ECHOMOTION_OFFLINE=1``) the error names the file and where to put it.
The file is loaded with ``torch.jit.load`` (TorchScript, never unpickled).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import torch

from echomotion.evaluation.params import TorchScriptExtractorParams

log = logging.getLogger(__name__)

CACHE_ENV = "ECHOMOTION_CACHE"
OFFLINE_ENV = "ECHOMOTION_OFFLINE"
TIMEOUT_S = 60.0

# The opener downloads go through (tests replace it to stay off the network).
open_url = urllib.request.urlopen


class DetectorUnavailable(FileNotFoundError):
    """The detector file is neither local nor cached and cannot be downloaded."""


def cache_dir(configured: str | None = None) -> Path:
    """The download cache: ``configured``, else ``$ECHOMOTION_CACHE``, else
    ``~/.cache/echomotion``."""
    if configured:
        return Path(configured).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    return Path.home() / ".cache" / "echomotion"


def cached_name(url: str) -> str:
    """The cache file name of ``url``: the last part of its path (query dropped)."""
    name = Path(urlparse(url).path).name
    if not name:
        raise ValueError(f"{url}: no file name in the URL path")
    return name


def sha256_of(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_sha256(path: Path, expected: str | None, what: str) -> None:
    if expected is not None and (got := sha256_of(path)) != expected.lower():
        raise ValueError(f"{what} {path}: sha256 {got}, expected {expected}")


def download(url: str, target: Path, sha256: str | None = None) -> Path:
    """Download ``url`` to ``target`` atomically: into a temporary file beside it, checked
    against ``sha256`` when given, then renamed; a failed download leaves nothing behind."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out, open_url(url, timeout=TIMEOUT_S) as response:
            shutil.copyfileobj(response, out)
        _check_sha256(Path(tmp), sha256, f"download of {url} to")
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return target


def _unavailable(params: TorchScriptExtractorParams, target: Path | None, why: str) -> str:
    where = [f"path {params.path}"] if params.path else []
    where += [f"cache {target}"] if target is not None else []
    return (
        f"feature network not found ({', '.join(where)}): {why}. Supply the file: download "
        f"{params.url or 'it'} on a machine with a network and copy it to "
        f"{target or params.path}, or set the extractor's path to a local copy."
    )


def detector_file(params: TorchScriptExtractorParams) -> Path:
    """The local file of a detector: ``path`` if it exists, else the cached download of
    ``url`` (downloaded now if absent)."""
    if params.path is not None and Path(params.path).is_file():
        return Path(params.path)
    if params.url is None:
        raise DetectorUnavailable(_unavailable(params, None, "no url to download it from"))
    target = cache_dir(params.cache_dir) / cached_name(params.url)
    if target.is_file():
        _check_sha256(target, params.sha256, "cached")
        return target
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        raise DetectorUnavailable(_unavailable(params, target, f"{OFFLINE_ENV} is set"))
    log.info("downloading %s to %s", params.url, target)
    try:
        return download(params.url, target, params.sha256)
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        raise DetectorUnavailable(_unavailable(params, target, f"download failed ({err})")) from err


def load_detector(
    params: TorchScriptExtractorParams, device: str | torch.device
) -> torch.jit.ScriptModule:
    """The detector as an eval-mode TorchScript module on ``device``."""
    return torch.jit.load(str(detector_file(params)), map_location=device).eval()
