"""IDX files (the MNIST format), gzipped or not: read, write, and fetch with checksum verification.

IDX layout: 2 zero bytes, a type code, the number of dimensions ``k``, ``k`` big-endian uint32 sizes,
then the values in big-endian C order.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import os
import struct
import urllib.error
import urllib.request
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

log = logging.getLogger(__name__)

# IDX type code -> numpy dtype (big-endian where it matters)
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
GZIP_MAGIC = b"\x1f\x8b"


CACHE_SUFFIX = ".gdlab-cache.npy"  # the decoded array of a source file, next to it (see read_idx_cached)


def _open(path: Path) -> BinaryIO:
    with open(path, "rb") as f:
        gz = f.read(2) == GZIP_MAGIC
    return gzip.open(path, "rb") if gz else open(path, "rb")  # closed by the caller


def read_idx(path: str | os.PathLike) -> torch.Tensor:
    """The array stored in an IDX file (``.gz`` or raw, told apart by content) as a tensor.

    The values are read straight into the returned array: the file's contents are never held twice.
    """
    path = Path(path)
    try:
        with _open(path) as f:
            head = f.read(4)
            if len(head) < 4 or head[:2] != b"\x00\x00" or head[2] not in IDX_TYPES:
                raise ValueError(
                    f"{path} is not an IDX file (bad header {head.hex()}): replace it with the original"
                )
            dtype, ndim = np.dtype(IDX_TYPES[head[2]]), head[3]
            sizes = f.read(4 * ndim)
            if len(sizes) < 4 * ndim:
                raise ValueError(f"{path} is truncated (header cut short): delete it and fetch it again")
            shape = struct.unpack(f">{ndim}I", sizes)
            array = np.empty(shape, dtype=dtype)
            view, got = memoryview(array.reshape(-1).view(np.uint8)), 0
            while got < array.nbytes and (n := f.readinto(view[got:])):
                got += n
            extra = bool(f.read(1))
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise ValueError(f"{path} is a corrupt gzip file ({err}): delete it and fetch it again") from None
    if got != array.nbytes or extra:
        raise ValueError(
            f"{path} is truncated or corrupt: its header says shape {shape} ({array.nbytes} bytes of data) "
            f"but it holds {'more' if extra else got}: delete it and fetch it again"
        )
    if dtype.byteorder not in "=|":
        array = array.byteswap(inplace=True).view(dtype.newbyteorder("="))  # in place, to native order
    return torch.from_numpy(array)


def cache_key(path: Path, md5: str | None = None) -> str:
    """What identifies a source file's contents: its verified ``md5``, else its size and mtime."""
    if md5 is not None:
        return md5
    stat = path.stat()
    return f"{stat.st_size}-{stat.st_mtime_ns}"


def read_idx_cached(path: str | os.PathLike, key: str) -> torch.Tensor:
    """``read_idx(path)``, kept decoded in ``<file>.<key>.gdlab-cache.npy`` next to it: later runs load that
    (a memory map) instead of decompressing. ``key`` (see :func:`cache_key`) names the source's contents, so
    a replaced file gets a new cache; a folder that cannot be written to just goes without one."""
    path = Path(path)
    cache = path.with_name(f"{path.name}.{key}{CACHE_SUFFIX}")
    if cache.is_file():
        try:
            return torch.from_numpy(np.load(cache, mmap_mode="c"))
        except (OSError, ValueError) as err:
            log.debug("%s unreadable (%s): decoding %s again", cache, err, path.name)
    tensor = read_idx(path)
    _write_cache(cache, tensor.numpy(), stale=f"{path.name}.")
    return tensor


def _write_cache(cache: Path, array: np.ndarray, stale: str) -> None:
    """Write atomically (a per-process temporary name, then ``os.replace``: DDP ranks never read half a
    file) and remove the caches of the source's earlier contents (``stale`` + key + suffix)."""
    part = cache.with_name(f"{cache.name}.{os.getpid()}.part")
    try:
        with open(part, "wb") as f:
            np.save(f, array, allow_pickle=False)
        os.replace(part, cache)
        for old in cache.parent.glob(f"{stale}*{CACHE_SUFFIX}"):
            if old != cache and "." not in old.name[len(stale) : -len(CACHE_SUFFIX)]:
                old.unlink(missing_ok=True)
    except OSError as err:
        log.debug("no cache written for %s (%s)", cache.name, err)
    finally:
        with contextlib.suppress(OSError):
            part.unlink(missing_ok=True)


def write_idx(path: str | os.PathLike, tensor: torch.Tensor) -> Path:
    """Write ``tensor`` as an IDX file (gzipped when the name ends in ``.gz``); used by tests and tools."""
    path = Path(path)
    array = tensor.detach().cpu().numpy()
    code = next((c for c, dt in IDX_TYPES.items() if np.dtype(dt).newbyteorder("=") == array.dtype), None)
    if code is None:
        raise ValueError(f"IDX has no type for dtype {array.dtype}")
    payload = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload += array.astype(np.dtype(IDX_TYPES[code])).tobytes()
    path.write_bytes(gzip.compress(payload, mtime=0) if path.suffix == ".gz" else payload)
    return path


def md5sum(path: str | os.PathLike) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_md5(path: Path, md5: str) -> None:
    """Refuse a file whose checksum is not ``md5``: it is never used silently."""
    actual = md5sum(path)
    if actual != md5:
        raise ValueError(
            f"{path} has md5 {actual}, expected {md5}: the file is corrupt or not the expected one; "
            "delete it (it is downloaded again) or replace it with the original; for a file of your own, "
            f"give its checksum in md5 ({{{path.name}: {actual}}}) or store it uncompressed (no checksum needed)"
        )


def download(url: str, dest: Path, md5: str, timeout: float = 10.0) -> None:
    """Download ``url`` to ``dest`` with a progress bar; keep it only if its md5 matches. ``timeout``:
    seconds the server may take to answer, and to send each next piece."""
    from tqdm.auto import tqdm

    # A per-process temporary name: DDP ranks that all start a download never write into one file.
    part = dest.with_name(f"{dest.name}.{os.getpid()}.part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name) as bar:
                for chunk in iter(lambda: response.read(1 << 16), b""):
                    out.write(chunk)
                    bar.update(len(chunk))
        verify_md5(part, md5)
        part.replace(dest)
    finally:
        part.unlink(missing_ok=True)


def fetch_idx_files(
    data_dir: str | os.PathLike,
    files: Mapping[str, str],
    mirrors: Sequence[str],
    allow_download: bool = True,
    dataset: str = "the dataset",
    timeout: float = 20.0,
) -> dict[str, Path]:
    """Find each ``name.gz`` (md5-checked) or its uncompressed ``name`` in ``data_dir``; download what is missing.

    ``files`` maps the gzipped file names to their md5. An uncompressed file has no published
    checksum: it is accepted when its IDX header matches its size (``read_idx`` checks that).
    Offline, or with ``allow_download=False``, a missing file is a ``FileNotFoundError`` saying which
    files to put where. A file that is not the expected one is a ``ValueError``. ``timeout`` bounds the
    wait for servers that do not answer, over all mirrors of a file (each gets an equal share).
    """
    data_dir = Path(data_dir)
    found: dict[str, Path] = {}
    for name, md5 in files.items():
        gz, raw = data_dir / name, data_dir / name.removesuffix(".gz")
        if gz.is_file():
            verify_md5(gz, md5)
            found[name] = gz
        elif raw.is_file():
            log.info("%s: uncompressed, no published checksum; its IDX header is checked instead", raw)
            found[name] = raw
    missing = [name for name in files if name not in found]
    reason = "download=False"
    if missing and allow_download:
        data_dir.mkdir(parents=True, exist_ok=True)
        errors: list[str] = []
        for name in missing:
            for mirror in mirrors:
                url = mirror.rstrip("/") + "/" + name
                log.info("downloading %s", url)
                try:
                    download(url, data_dir / name, files[name], timeout=timeout / len(mirrors))
                    found[name] = data_dir / name
                    break
                except (urllib.error.URLError, OSError, ValueError) as err:
                    errors.append(f"{url}: {getattr(err, 'reason', err)}")
                    log.warning("download failed: %s", errors[-1])
            if name not in found:
                break  # no mirror has it (or we are offline): the rest would fail the same way, slowly
        missing = [name for name in files if name not in found]
        if errors:
            reason = f"download failed, waiting at most {timeout:g} s for the mirrors to answer: {'; '.join(errors)}"
    if missing:
        where = data_dir.resolve()
        raise FileNotFoundError(
            f"{dataset} needs {', '.join(missing)} in {where} ({reason}): put those files there (gzipped or not; "
            f"from {mirrors[0] if mirrors else 'the dataset site'}), or point data_dir at the folder holding them"
        )
    return found
