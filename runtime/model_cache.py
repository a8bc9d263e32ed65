"""A whole-model compile cache: a warm ``runtime.compile`` of an unchanged model skips import,
optimization, lowering and LLVM, and maps the weights from disk instead of reading them.

Cached are models given as a path, bytes or an ``onnx.ModelProto`` (an ``ir.Graph`` has no
bytes to hash) whose inputs are all static once ``input_shapes`` is applied (the others
compile per feed shape when they run). One file per entry, ``$XPUC_CACHE_DIR/models/<key>.xpm``,
written to a temp file and renamed into place, so concurrent compiles never see half of one::

    header (magic, meta length, blob offset, blob size, sha256 of meta) | meta | pad | blob

The meta (a pickle) is what running needs after lowering: the optimized graph without its
large constants, the kernel call list and aliases, each kernel's object code, where each
constant lies in the blob and, for an emulated target, the counters' layout. The blob holds
the constants the kernels read (the weights as laid out for them), mapped read-only, so a
warm start reads no weight byte before a kernel touches it. An entry whose header or meta
does not check out, or whose file is shorter than its header says, is a miss, and the cold
compile that follows replaces it. (The blob is not hashed on load: that would read every
weight; truncation is caught by the size.) Entries beyond :data:`MAX_BYTES` in all are
evicted least recently used first. The folder is trusted as the object code in it is: an
entry is unpickled and its code run.

The key hashes everything that decides the result: the model's bytes (and its external
data files), the bound input shapes, host tiling, target and options, xpuc's own sources, the
numpy / networkx / onnx versions, and the LLVM version and host CPU (:func:`jit.host_id`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import pickle
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import networkx as nx
import numpy as np
import onnx

from backends.codegen import KernelSpec, Lowered, value_inputs
from backends import emulate
from backends.target import Target
from ir.graph import Graph

from . import cache, jit
from .executor import Executor

FORMAT = "xpuc-model-cache-1"
MAGIC = b"XPUCMC01"
HEADER = struct.Struct("<8sQQQ32s")
ALIGN = 64
"""Every constant starts at a multiple of this in the blob (and so in memory: mmap is page-aligned)."""
SMALL_BYTES = 4096
"""Constants up to this size stay inside the pickled graph; larger ones live only in the blob."""
PACKAGES = ("ir", "frontends", "backends", "runtime")
LOCATION = b"location"
"""The external-data key of a TensorProto, as it appears verbatim in a model file naming one."""
MAX_BYTES = 8 << 30
"""Writing an entry trims the others, least recently used first, to this total (the new one stays)."""
MEMO_MARGIN_NS = 100_000_000
"""A file modified less than this before it was hashed is hashed again next time: file
timestamps tick coarsely, so a second edit right after the first could leave them unchanged."""


@dataclass(frozen=True)
class Key:
    """An entry's name, and the stat of each model file it was hashed from at that moment."""

    name: str
    files: tuple[tuple[str, tuple[int, ...]], ...] = ()

    def unchanged(self) -> bool:
        """The files still look as they did when hashed (else a cold compile may have read other bytes)."""
        return all(_stat(path) == stat for path, stat in self.files)


@dataclass
class Entry:
    graph: Graph
    """The optimized graph; constants over :data:`SMALL_BYTES` have no data here."""
    kernels: list[KernelSpec]
    aliases: dict[str, str]
    symbols: dict[str, str]
    objects: dict[str, bytes]
    constants: dict[str, tuple[np.dtype, tuple[int, ...], int]]
    """value name -> dtype, shape and offset in the blob."""
    layout: emulate.Layout | None
    counters: int
    """Elements of the emulation's counters buffer (written by kernels, so never mapped)."""


# ----------------------------------------------------------------------------- keys
def key(model: str | os.PathLike | bytes | onnx.ModelProto, input_shapes: Mapping[str, Any] | None,
        settings: Any) -> Key | None:
    """The key of compiling ``model`` with ``input_shapes`` and ``settings`` (whose repr must
    name every option that changes the compiled code); None when the model cannot be hashed."""
    files: tuple = ()
    if isinstance(model, onnx.ModelProto):
        try:
            digest = _sha256(model.SerializeToString(deterministic=True))
        except ValueError:  # over protobuf's 2 GiB: such a model cannot come as one proto anyway
            return None
    elif isinstance(model, (bytes, bytearray)):
        digest = _sha256(model)
    else:
        found = _file_digest(Path(model))
        if found is None:
            return None
        digest, files = found
    shapes = sorted((str(name), repr(shape)) for name, shape in (input_shapes or {}).items())
    name = cache.cache_key(FORMAT, digest, repr(shapes), repr(settings), _code_digest(), *jit.host_id())
    return Key(name, files)


@functools.cache
def _code_digest() -> str:
    """xpuc's own sources and the libraries whose objects an entry pickles or whose import it skips."""
    h = hashlib.sha256(f"{np.__version__} {nx.__version__} {onnx.__version__}".encode())
    root = Path(__file__).resolve().parents[1]
    for path in sorted(p for package in PACKAGES for p in (root / package).rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _stat(path: str) -> tuple[int, ...] | None:
    try:
        s = os.stat(path)
    except OSError:
        return None
    return s.st_size, s.st_mtime_ns, s.st_ctime_ns, s.st_ino, s.st_dev


def _file_digest(path: Path) -> tuple[str, tuple] | None:
    """Digest of a model file and the external data files it names, with their stats.

    A memo per path remembers the digest with the files' stats, so an unchanged 500 MB model
    is not read again; files modified within :data:`MEMO_MARGIN_NS` of hashing are not memoized.
    """
    try:
        path = path.resolve(strict=True)
    except OSError:
        return None
    memo = cache.cache_dir() / "models" / f"{cache.cache_key(str(path))}.stat"
    try:
        record = json.loads(memo.read_text())
        files = tuple((p, tuple(s)) for p, s in record["files"])
        if all(_stat(p) == s for p, s in files):
            return record["digest"], files
    except (OSError, ValueError, KeyError, TypeError):
        pass
    started = time.time_ns()
    try:
        model_digest, mentions_location = _hash_file(path)
        names = [path, *(_external_files(path) if mentions_location else [])]
        files = tuple((str(p), _stat(str(p))) for p in names)
        digests = [model_digest] + [_hash_file(p)[0] for p in names[1:]]
    except OSError:
        return None
    if any(s is None for _, s in files):
        return None
    digest = cache.cache_key(*(part for p, d in zip(names, digests)
                               for part in (p.relative_to(path.parent).as_posix(), d)))
    if all(s[1] < started - MEMO_MARGIN_NS and s[2] < started - MEMO_MARGIN_NS for _, s in files):
        _write_atomic(memo, [json.dumps({"files": files, "digest": digest}).encode()])
    return digest, files


def _hash_file(path: Path, chunk: int = 1 << 24) -> tuple[str, bool]:
    """sha256 of a file, and whether it contains ``b"location"``: a model whose bytes lack it names
    no external data file, and need not be parsed to find out."""
    h, tail, found = hashlib.sha256(), b"", False
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
            found = found or LOCATION in tail + block[:len(LOCATION)] or LOCATION in block
            tail = block[-len(LOCATION):]
    return h.hexdigest(), found


def _external_files(path: Path) -> list[Path]:
    """The external data files a model names, inside its folder (the loader refuses others)."""
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # not a readable model: no key, and the loader reports what is wrong
        return []
    root = path.parent
    locations = {e.value for t in proto.graph.initializer for e in t.external_data if e.key == "location"}
    found = [(root / loc).resolve() for loc in sorted(locations) if loc and not os.path.isabs(loc)]
    return [p for p in found if root in p.parents and p.is_file()]


# ----------------------------------------------------------------------- load / store
def _entry_path(key: Key) -> Path:
    return cache.cache_dir() / "models" / f"{key.name}.xpm"


def load(key: Key, *, target: Target | None, threads: int,
         min_parallel_work: int) -> tuple[Executor, emulate.Emulation | None] | None:
    """The executor (and emulation) stored under ``key``, or None on a miss or a bad entry."""
    start = time.perf_counter()
    path = _entry_path(key)
    try:
        with open(path, "rb") as f:
            magic, meta_size, blob_offset, blob_size, digest = HEADER.unpack(f.read(HEADER.size))
            meta = f.read(meta_size)
            if (magic != MAGIC or hashlib.sha256(meta).digest() != digest
                    or os.fstat(f.fileno()).st_size != blob_offset + blob_size):
                return None
        entry: Entry = pickle.loads(meta)
        blob = (np.memmap(path, np.uint8, "r", offset=blob_offset, shape=(blob_size,)) if blob_size
                else np.zeros(0, np.uint8))  # mmap refuses an empty range
    except Exception:  # unreadable, truncated, or from a different build: a miss, never a crash
        return None
    _touch(path)
    constants = {name: blob[offset:offset + math.prod(shape) * dtype.itemsize].view(dtype).reshape(shape)
                 for name, (dtype, shape, offset) in entry.constants.items()}
    emulation = None
    if entry.layout is not None:
        constants[emulate.COUNTERS] = np.zeros(entry.counters, np.int64)
        emulation = emulate.Emulation(entry.graph, target, entry.layout, constants[emulate.COUNTERS])
    library = jit.link(entry.objects, entry.symbols, start)
    executor = Executor(entry.graph, Lowered(None, entry.kernels, constants, entry.aliases), library,
                        threads=threads, min_parallel_work=min_parallel_work)
    return executor, emulation


def store(key: Key, executor: Executor, emulation: emulate.Emulation | None) -> None:
    """Write the entry for ``key``; skipped (it only costs time) when the model files changed
    since they were hashed, a constant cannot be mapped, or the disk refuses."""
    graph = executor.graph
    arrays = {name: np.ascontiguousarray(a) for name, a in executor.constants.items()  # only what kernels read
              if emulation is None or a is not emulation.counters}
    if not key.unchanged() or value_inputs(graph) or any(a.dtype.hasobject for a in arrays.values()):
        return
    places, size = {}, 0
    for name, a in arrays.items():
        offset = _aligned(size, ALIGN)
        places[name] = (a.dtype, tuple(a.shape), offset)
        size = offset + a.nbytes
    stripped = graph.copy()
    for value in stripped.values.values():
        if value.data is not None and value.data.nbytes > SMALL_BYTES:
            value.data = None
    lib = executor.library
    meta = pickle.dumps(Entry(stripped, executor.lowered.kernels, executor.lowered.aliases, lib.symbols, lib.objects,
                              places, emulation and emulation.layout,
                              emulation.counters.size if emulation else 0), protocol=pickle.HIGHEST_PROTOCOL)
    blob_offset = _aligned(HEADER.size + len(meta), 4096)
    header = HEADER.pack(MAGIC, len(meta), blob_offset, size, hashlib.sha256(meta).digest())
    chunks, position = [header, meta, bytes(blob_offset - HEADER.size - len(meta))], blob_offset
    for name, a in arrays.items():
        offset = places[name][2] + blob_offset
        chunks += [bytes(offset - position), a.reshape(-1).view(np.uint8)]
        position = offset + a.nbytes
    _write_atomic(_entry_path(key), chunks)
    _trim(_entry_path(key))


def _touch(path: Path) -> None:
    """Mark an entry used now: :func:`_trim` evicts by modification time."""
    try:
        os.utime(path)
    except OSError:
        pass


def _trim(keep: Path) -> None:
    """Delete the least recently used entries until all of them fit in :data:`MAX_BYTES`.
    (A process that has one mapped keeps reading it: unlinking leaves the mapping valid.)"""
    try:
        stats = [(p.stat(), p) for p in keep.parent.glob("*.xpm") if p != keep]
        total = sum(s.st_size for s, _ in stats) + (keep.stat().st_size if keep.exists() else 0)
        for stat, path in sorted(stats, key=lambda item: item[0].st_mtime_ns):
            if total <= MAX_BYTES:
                break
            path.unlink(missing_ok=True)
            total -= stat.st_size
    except OSError:
        pass


def _aligned(n: int, to: int) -> int:
    return -(-n // to) * to


def _write_atomic(path: Path, chunks) -> None:
    """Temp file + rename, so a reader sees a whole file or none; a write that fails is dropped."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
        os.replace(tmp, path)
    except OSError:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
