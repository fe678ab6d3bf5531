"""Host-side I/O and index helpers for nnx's data and serialization code (the only NumPy users).

``nnx/`` may not import NumPy, so what needs NumPy on the host lives here:

* the checkpoint container: an ``.npz``-compatible zip of ``.npy`` members (never pickled) plus
  one JSON member with metadata, written atomically (:func:`write_archive`) and read back with
  every header checked before any byte of array data is allocated (:func:`read_archive`);
* seeded permutations for data shuffling (:func:`permutation`), a pure function of the seed
  and the epoch, so that the order of epoch ``k`` can be recomputed after a restart;
* gathering and stacking host rows into one batch (:func:`take_rows`, :func:`stack`).

The archive is readable with ``numpy.load(path, allow_pickle=False)`` (the metadata member is
skipped by NumPy as a non-``.npy`` file).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import stat
import tempfile
import time
import zipfile
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "ArchiveError",
    "META_NAME",
    "atomic_write",
    "is_host_array",
    "permutation",
    "read_archive",
    "split_indices",
    "stack",
    "take_rows",
    "to_host",
    "write_archive",
]

#: the zip member holding the JSON metadata
META_NAME = "__nnx_meta__.json"
#: dtypes a checkpoint may hold (no objects, strings, structured or datetime arrays)
_ALLOWED_KINDS = ("b", "i", "u", "f")
_MAX_META_BYTES = 64 * 2**20
_MAX_HEADER = 10000
# deflate cannot expand data by more than ~1032x; anything beyond is a lie (or a zip bomb)
_MAX_DEFLATE_RATIO = 1100
#: without an explicit ``max_bytes``, an archive may unpack to at most this many bytes beyond its own
#: size (stored members unpack to their own size; only compressed ones can expand)
DEFAULT_MAX_BYTES = 4 * 2**30
_MAX_JSON_DEPTH = 64
_UMASK = os.umask(0o022)
os.umask(_UMASK)


class ArchiveError(ValueError):
    """A file is not a valid nnx/npz archive (truncated, corrupted, hand-crafted or unsafe)."""


# ---------------------------------------------------------------------------------------- writing
def atomic_write(path: str | os.PathLike, write: Callable[[Any], None]) -> None:
    """Call ``write(fileobj)`` on a temporary file beside ``path``, then atomically replace ``path``.

    The temporary file is flushed and ``fsync``-ed, renamed over ``path`` with ``os.replace``
    and the directory is ``fsync``-ed, so that ``path`` is at every instant either the old
    complete file or the new complete file, even if the process is killed or the machine loses
    power. On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    _remove_stale_temporaries(directory, os.path.basename(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=_tmp_prefix(path), suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):  # mkstemp makes 0600 files; give the file the permissions open() would
            try:
                mode = os.stat(path).st_mode & 0o777
            except OSError:
                mode = 0o666 & ~_UMASK
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)


#: a temporary file of a save older than this was left by a killed process (a save in progress
#: rewrites its file continuously, so its modification time stays recent)
STALE_TEMPORARY_SECONDS = 15 * 60


def _tmp_prefix(path: str) -> str:
    return "." + os.path.basename(path) + "."


def _remove_stale_temporaries(directory: str, basename: str) -> None:
    """Remove temporary files of earlier saves of the same target that were killed (SIGKILL, power
    loss) before they could clean up. Only files named like ours (``.<target>.<random>.tmp``), owned
    by this user and untouched for :data:`STALE_TEMPORARY_SECONDS` are removed, so a concurrent
    save of the same file is never disturbed."""
    prefix = "." + basename + "."
    try:
        names = os.listdir(directory)
    except OSError:
        return
    now = time.time()
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".tmp")) or len(name) <= len(prefix) + 4:
            continue
        full = os.path.join(directory, name)
        try:
            st = os.lstat(full)
            if (stat.S_ISREG(st.st_mode) and now - st.st_mtime > STALE_TEMPORARY_SECONDS
                    and (not hasattr(os, "getuid") or st.st_uid == os.getuid())):
                os.unlink(full)
        except OSError:
            continue


def _fsync_dir(directory: str) -> None:
    if os.name != "posix":  # Windows cannot open a directory; os.replace is durable enough there
        return
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def _contiguous(arr: np.ndarray) -> np.ndarray:
    """C-contiguous copy (or the array itself) of the same shape: ``np.ascontiguousarray`` turns a 0-d
    array (BatchNorm's ``num_batches_tracked``) into shape ``(1,)``."""
    return np.ascontiguousarray(arr).reshape(arr.shape)


def write_archive(path: str | os.PathLike, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write ``arrays`` (name -> host array) and ``meta`` (JSON-able dict) atomically to ``path``.

    Each array becomes the member ``<name>.npy`` (stored uncompressed, written with
    ``allow_pickle=False``); ``meta`` becomes :data:`META_NAME`. Object arrays are refused.
    """
    for name, arr in arrays.items():
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"write_archive: {name!r} is a {type(arr).__name__}, expected a NumPy array")
        if arr.dtype.kind not in _ALLOWED_KINDS:
            raise TypeError(f"write_archive: {name!r} has dtype {arr.dtype}; only bool, integer and floating "
                            "arrays can be saved")
    meta_bytes = json.dumps(meta, allow_nan=False, sort_keys=False).encode("utf-8")
    if _is_safetensors_path(path):
        _write_safetensors(path, arrays, meta_bytes.decode("utf-8"))
        return

    def write(f: Any) -> None:
        with zipfile.ZipFile(f, mode="w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            zf.writestr(META_NAME, meta_bytes)
            for name, arr in arrays.items():
                with zf.open(name + ".npy", mode="w", force_zip64=True) as member:
                    np.lib.format.write_array(member, _contiguous(arr), allow_pickle=False)

    atomic_write(path, write)


# ---------------------------------------------------------------------------------------- reading
def read_archive(path: str | os.PathLike, max_bytes: int | None = None
                 ) -> tuple[dict[str, np.ndarray], dict[str, Any] | None]:
    """Read an archive written by :func:`write_archive` (or a plain ``numpy.savez`` file).

    Returns ``(arrays, meta)``; ``meta`` is None for a plain ``.npz`` without nnx metadata.
    Nothing in the file is executed: ``.npy`` headers are parsed with ``allow_pickle=False``,
    object/structured/string dtypes are refused, and every array's declared size is checked
    against the bytes actually stored before memory is allocated. Zip CRCs detect corruption;
    safetensors files written by nnx carry a SHA-256 digest of their tensor data, checked here.

    ``max_bytes`` bounds the total size the archive may unpack to, checked before anything is
    decompressed (zip bombs). Default: the file's own size plus :data:`DEFAULT_MAX_BYTES` (4 GiB),
    so uncompressed checkpoints of any size load; pass a larger value for huge compressed ones.
    Raises :class:`ArchiveError` with the reason for anything else than a sound archive.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such checkpoint file: {path!r}")
    file_size = os.path.getsize(path)
    if max_bytes is None:
        max_bytes = file_size + DEFAULT_MAX_BYTES
    if _is_safetensors_path(path):
        return _read_safetensors(path, file_size, max_bytes)
    try:
        zf = zipfile.ZipFile(path, mode="r")
    except zipfile.BadZipFile as exc:
        raise ArchiveError(f"{path!r} is not an nnx checkpoint or .npz file (truncated, corrupted or another "
                           f"format: {exc})") from None
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] | None = None
    try:
        with zf:
            infos = zf.infolist()
            _check_members(path, infos, file_size, max_bytes)
            for info in infos:
                name = info.filename
                if name == META_NAME:
                    meta = _parse_meta(path, zf.read(info))
                    continue
                if not name.endswith(".npy"):
                    raise ArchiveError(f"{path!r}: unexpected member {name!r} (only .npy arrays and metadata "
                                       "are allowed)")
                with zf.open(info) as member:
                    arrays[name[:-4]] = _read_npy(member, info.file_size, f"{path!r}: array {name[:-4]!r}")
    except zipfile.BadZipFile as exc:
        raise ArchiveError(f"{path!r} is corrupted ({exc})") from None
    except (EOFError, OSError) as exc:
        raise ArchiveError(f"{path!r} is truncated or unreadable ({exc})") from None
    return arrays, meta


def _check_members(path: str, infos: list[zipfile.ZipInfo], file_size: int, max_bytes: int) -> None:
    """Every member's declared sizes, compression, encryption and name, and the total, before any is read."""
    total = 0
    seen: set[str] = set()
    for info in infos:
        if info.filename in seen:
            raise ArchiveError(f"{path!r}: member {info.filename!r} appears twice (a hand-crafted archive; "
                               "refusing to guess which one counts)")
        seen.add(info.filename)
        if info.flag_bits & 0x1:
            raise ArchiveError(f"{path!r}: member {info.filename!r} is encrypted; nnx checkpoints never are")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ArchiveError(f"{path!r}: member {info.filename!r} uses an unsupported compression")
        if info.compress_size > file_size or (
                info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size) or (
                info.file_size > max(info.compress_size, 1) * _MAX_DEFLATE_RATIO):
            raise ArchiveError(f"{path!r}: member {info.filename!r} declares {info.file_size} bytes, "
                               f"more than the file can hold (truncated or hand-crafted)")
        if info.filename == META_NAME and info.file_size > _MAX_META_BYTES:
            raise ArchiveError(f"{path!r}: metadata of {info.file_size} bytes is too large")
        total += info.file_size
    if total > max_bytes:
        raise ArchiveError(f"{path!r} unpacks to {total} bytes, more than the {max_bytes} allowed (max_bytes); "
                           "a compressed archive this large is refused unless max_bytes allows it")


def _parse_meta(path: str, raw: bytes) -> dict[str, Any]:
    """The JSON metadata member: an object, nested at most :data:`_MAX_JSON_DEPTH` deep."""
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArchiveError(f"{path!r}: metadata is not valid JSON ({exc})") from None
    except RecursionError:
        raise ArchiveError(f"{path!r}: metadata is nested too deeply to be an nnx checkpoint") from None
    if not isinstance(meta, dict):
        raise ArchiveError(f"{path!r}: metadata must be a JSON object")
    if _depth(meta) > _MAX_JSON_DEPTH:
        raise ArchiveError(f"{path!r}: metadata is nested more than {_MAX_JSON_DEPTH} levels deep")
    return meta


def _depth(obj: Any) -> int:
    """Nesting depth of a JSON value, without recursion (a hostile file may nest thousands deep)."""
    deepest, stack = 0, [(obj, 1)]
    while stack:
        node, d = stack.pop()
        deepest = max(deepest, d)
        if isinstance(node, dict):
            stack.extend((v, d + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, d + 1) for v in node)
    return deepest


def _read_npy(f: Any, member_size: int, where: str) -> np.ndarray:
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=_MAX_HEADER)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=_MAX_HEADER)
        else:
            raise ArchiveError(f"{where}: unsupported .npy version {version}")
    except ArchiveError:
        raise
    except Exception as exc:  # bad magic, unparsable header, pickled payload
        raise ArchiveError(f"{where} is not a valid .npy array ({exc})") from None
    if dtype.hasobject or dtype.kind not in _ALLOWED_KINDS or dtype.fields is not None:
        raise ArchiveError(f"{where} has dtype {dtype}; only bool, integer and floating arrays are accepted "
                           "(object arrays would need pickle)")
    if not all(type(s) is int and s >= 0 for s in shape):  # bool is an int subclass: (True, 48) is refused
        raise ArchiveError(f"{where} declares an invalid shape {shape}")
    count = math.prod(shape)
    nbytes = count * dtype.itemsize
    header_end = f.tell()
    if nbytes != member_size - header_end:
        raise ArchiveError(f"{where} declares shape {tuple(shape)} and dtype {dtype} ({nbytes} bytes) but "
                           f"holds {member_size - header_end} bytes of data (truncated or hand-crafted)")
    flat = np.empty(count, dtype=dtype)  # allocated only now that the size is proven
    view = memoryview(flat).cast("B") if nbytes else memoryview(b"")
    pos = 0
    while pos < nbytes:
        chunk = f.read(min(nbytes - pos, 1 << 24))
        if not chunk:
            raise ArchiveError(f"{where} is truncated: expected {nbytes} bytes, read {pos}")
        view[pos:pos + len(chunk)] = chunk
        pos += len(chunk)
    if f.read(1):
        raise ArchiveError(f"{where} has trailing bytes after its data")
    arr = flat.reshape(shape, order="F" if fortran else "C")
    if not dtype.isnative:
        arr = arr.astype(dtype.newbyteorder("="))
    return arr


# ---------------------------------------------------------------------------------------- safetensors
# A file whose name ends in ".safetensors" is written and read in that format instead (the optional
# extra nnx-backprop[safetensors]); the nnx metadata JSON goes into the header's "__metadata__".
_ST_DTYPES = {"BOOL": "bool", "U8": "uint8", "I8": "int8", "U16": "uint16", "I16": "int16", "U32": "uint32",
              "I32": "int32", "U64": "uint64", "I64": "int64", "F16": "float16", "F32": "float32", "F64": "float64"}


def _is_safetensors_path(path: str | os.PathLike) -> bool:
    return os.fspath(path).endswith(".safetensors")


def _safetensors_numpy() -> Any:
    try:
        import safetensors.numpy as st
    except ImportError:
        raise ImportError("files ending in .safetensors need the safetensors package: "
                          "pip install 'nnx-backprop[safetensors]' (or use the default .nnx/.npz format)") from None
    return st


#: safetensors metadata key of the SHA-256 digest nnx records over the tensors (names, dtypes, shapes, data)
DIGEST_NAME = "__nnx_sha256__"


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in sorted(arrays):
        arr = _contiguous(arrays[key])
        h.update(json.dumps([key, arr.dtype.str, list(arr.shape)]).encode("utf-8"))
        h.update(memoryview(arr).cast("B") if arr.nbytes else b"")
    return h.hexdigest()


def _write_safetensors(path: str | os.PathLike, arrays: dict[str, np.ndarray], meta_json: str) -> None:
    st = _safetensors_numpy()
    arrays = {k: _contiguous(v) for k, v in arrays.items()}
    data = st.save(arrays, metadata={META_NAME: meta_json, DIGEST_NAME: _digest(arrays)})
    atomic_write(path, lambda f: f.write(data))


def _read_safetensors(path: str, file_size: int, max_bytes: int
                      ) -> tuple[dict[str, np.ndarray], dict[str, Any] | None]:
    st = _safetensors_numpy()
    if file_size > max_bytes:
        raise ArchiveError(f"{path!r} holds {file_size} bytes, more than the {max_bytes} allowed (max_bytes)")
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ArchiveError(f"{path!r} is not a safetensors file (truncated: {len(data)} bytes)")
    n = int.from_bytes(data[:8], "little")
    if n > min(len(data) - 8, _MAX_META_BYTES):
        raise ArchiveError(f"{path!r}: safetensors header of {n} bytes does not fit in the file (truncated or "
                           "not a safetensors file)")
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArchiveError(f"{path!r}: safetensors header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise ArchiveError(f"{path!r}: safetensors header must be a JSON object")
    body = len(data) - 8 - n
    for key, info in header.items():
        if key == "__metadata__":
            continue
        if not isinstance(info, dict) or info.get("dtype") not in _ST_DTYPES:
            raise ArchiveError(f"{path!r}: tensor {key!r} has an unsupported dtype "
                               f"{info.get('dtype') if isinstance(info, dict) else info!r}")
        shape, offsets = info.get("shape"), info.get("data_offsets")
        if not (isinstance(shape, list) and all(isinstance(s, int) and s >= 0 for s in shape)
                and isinstance(offsets, list) and len(offsets) == 2 and all(isinstance(o, int) for o in offsets)):
            raise ArchiveError(f"{path!r}: tensor {key!r} has a malformed shape or offsets")
        nbytes = math.prod(shape) * np.dtype(_ST_DTYPES[info["dtype"]]).itemsize
        if not (0 <= offsets[0] <= offsets[1] <= body) or offsets[1] - offsets[0] != nbytes:
            raise ArchiveError(f"{path!r}: tensor {key!r} declares shape {shape} ({nbytes} bytes) but its data "
                               f"span {offsets} does not fit the {body} bytes stored (truncated or hand-crafted)")
    try:
        arrays = st.load(data)
    except Exception as exc:
        raise ArchiveError(f"{path!r} is not a valid safetensors file ({exc})") from None
    arrays = {k: np.array(v, copy=True) for k, v in arrays.items()}
    meta = None
    extra = header.get("__metadata__")
    if isinstance(extra, dict) and DIGEST_NAME in extra and extra[DIGEST_NAME] != _digest(arrays):
        raise ArchiveError(f"{path!r}: tensor data does not match the SHA-256 digest recorded when nnx wrote the "
                           "file (corrupted on disk or in transfer)")
    if isinstance(extra, dict) and META_NAME in extra:
        if not isinstance(extra[META_NAME], str):
            raise ArchiveError(f"{path!r}: nnx metadata must be a JSON string")
        meta = _parse_meta(path, extra[META_NAME].encode("utf-8"))
    return arrays, meta


# ---------------------------------------------------------------------------------------- data helpers
def permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """A permutation of ``range(n)`` (int64) that depends only on ``seed`` and ``epoch``."""
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFFFFFFFFFF, int(epoch)])
    return rng.permutation(n)


def is_host_array(x: Any) -> bool:
    """True for NumPy arrays and scalars."""
    return isinstance(x, (np.ndarray, np.generic))


def to_host(x: Any, dtype: Any = None) -> np.ndarray:
    """``numpy.asarray(x, dtype)`` (lists, scalars and host arrays; no copy when nothing changes)."""
    return np.asarray(x, dtype=dtype)


def take_rows(x: np.ndarray, index: np.ndarray, dtype: Any = None) -> np.ndarray:
    """Rows ``index`` (an integer array) of a host array as one new array of ``dtype``.

    One gather when ``x`` already has ``dtype`` (store float32 data to get that); otherwise the
    gathered rows are cast in a second pass. (``np.take(..., out=)`` with another dtype is no
    faster: NumPy casts through a temporary, reading the uninitialised buffer first.)
    """
    rows = np.take(x, index, axis=0)
    return rows if dtype is None else rows.astype(dtype, copy=False)


def split_indices(n: int, n_test: int, seed: int, shuffle: bool = True,
                  stratify: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices of a seeded split of ``range(n)`` with ``n_test`` test items.

    With ``stratify`` (host labels of length ``n``) each class contributes to the test part in
    proportion to its size (largest remainders get the leftover places), as scikit-learn does.
    """
    rng = np.random.default_rng(int(seed) & 0xFFFFFFFFFFFFFFFF)
    if stratify is None:
        if not shuffle:  # as scikit-learn: the last n_test items are the test part
            return np.arange(n - n_test), np.arange(n - n_test, n)
        order = rng.permutation(n)
        return order[n_test:], order[:n_test]
    labels = np.asarray(stratify).reshape(-1)
    if labels.shape[0] != n:
        raise ValueError(f"train_test_split: stratify has {labels.shape[0]} labels for {n} samples")
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    exact = counts * (n_test / n)
    take = np.floor(exact).astype(np.int64)
    rest = n_test - int(take.sum())
    if rest > 0:
        take[np.argsort(-(exact - take), kind="stable")[:rest]] += 1
    test, train = [], []
    for c in range(len(classes)):
        members = np.flatnonzero(inverse == c)
        if shuffle:
            members = rng.permutation(members)
        test.append(members[:take[c]])
        train.append(members[take[c]:])
    test_idx, train_idx = np.concatenate(test), np.concatenate(train)
    if shuffle:
        test_idx, train_idx = rng.permutation(test_idx), rng.permutation(train_idx)
    return train_idx, test_idx


def stack(items: list[Any], dtype: Any = None) -> np.ndarray:
    """Stack host samples (arrays or numbers) into one new host array along a new first axis."""
    out = np.stack([np.asarray(v) for v in items])
    return out if dtype is None else out.astype(dtype, copy=False)
