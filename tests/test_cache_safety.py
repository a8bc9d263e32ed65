"""Both compile caches under damage, refusal, interruption and concurrency.

A damaged file (truncated, bit-flipped, foreign) is never loaded: it is a miss, and the
compile that follows replaces it. A cache folder that refuses writes (read-only, full)
gives one warning and correct outputs. A compile killed mid-write leaves no entry. Several
processes compiling the same model into one folder at once all get correct outputs and
leave one valid entry. Processes here are real: the disk-full case runs under a file-size
limit of 0 bytes, so every write fails in the kernel as it does on a full disk.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

import runtime
from runtime import cache, model_cache
from test_model_cache import W, X, entries, expected, mlp

SHAPES = {"x": X.shape}


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("XPUC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("XPUC_NO_CACHE", raising=False)
    monkeypatch.setattr(cache, "_warned", set())
    return tmp_path / "cache"


def kernel_files(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.glob("*.o"))


def compile_mlp(**kwargs):
    return runtime.compile(mlp(), input_shapes=SHAPES, **kwargs)


def assert_valid_entries(cache_dir: Path) -> None:
    """Every kernel object passes its check, and the model entry loads."""
    for path in kernel_files(cache_dir):
        assert cache.load(path.stem) is not None, path
    for path in entries(cache_dir):
        found = model_cache.load(model_cache.Key(path.stem), target=None, threads=1, min_parallel_work=1)
        assert found is not None, path


# ------------------------------------------------------------------------------ damage
def damage(path: Path, how: str, foreign: bytes) -> None:
    data = bytearray(path.read_bytes())
    if how == "truncate":
        del data[len(data) // 2:]
    elif how == "flip":
        data[-1] ^= 0x01  # last byte of the object code / of the weights
    elif how == "foreign":
        data = bytearray(foreign)
    elif how == "garbage":
        data = bytearray(np.random.default_rng(0).bytes(len(data)))
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["truncate", "flip", "foreign", "garbage"])
def test_a_damaged_kernel_object_is_compiled_again_never_loaded(cache_dir, how):
    compile_mlp().run({"x": X})
    for path in entries(cache_dir):
        path.unlink()  # so the next compile goes through the kernel cache
    cache.store("another-kernel", b"valid object code, but for another key")
    foreign = (cache_dir / "another-kernel.o").read_bytes()
    (cache_dir / "another-kernel.o").unlink()
    damaged = kernel_files(cache_dir)
    for path in damaged:
        damage(path, how, foreign)
    again = compile_mlp()
    assert again._last.library.compiled == len(damaged) > 0  # none of them was linked
    np.testing.assert_allclose(again.run({"x": X})[0], expected(X), rtol=1e-5, atol=1e-5)
    assert_valid_entries(cache_dir)  # replaced by good ones


@pytest.mark.parametrize("how", ["flip", "foreign"])
def test_a_damaged_model_entry_is_caught_after_it_was_verified_once(cache_dir, monkeypatch, how):
    """The blob hash is skipped for an entry whose stat matches its memo; any write changes
    the stat, so damage after the memo is still caught."""
    compile_mlp()
    path, = entries(cache_dir)
    monkeypatch.setattr(model_cache, "MEMO_MARGIN_NS", 0)
    compile_mlp()  # a hit: verified, memo written
    assert model_cache._memo_path(path).read_text() != "null"
    runtime.compile(mlp(-W), input_shapes=SHAPES)  # another key's entry
    foreign = next(p for p in entries(cache_dir) if p != path).read_bytes()
    damage(path, how, foreign)
    imports = []
    load = runtime.compiled.onnx_frontend.load
    monkeypatch.setattr(runtime.compiled.onnx_frontend, "load", lambda *a, **k: imports.append(1) or load(*a, **k))
    np.testing.assert_allclose(compile_mlp().run({"x": X})[0], expected(X), rtol=1e-5, atol=1e-5)
    assert imports == [1]  # a miss, compiled cold


# --------------------------------------------------------------------- refusing folders
def test_a_read_only_cache_folder_warns_once_and_compiles(cache_dir, monkeypatch):
    """Root ignores permission bits, so the refusal is made where every cache write starts:
    creating its temp file fails with EROFS, as on a read-only mount."""
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(cache.tempfile, "mkstemp", refuse)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            np.testing.assert_allclose(compile_mlp().run({"x": X})[0], expected(X), rtol=1e-5, atol=1e-5)
    assert [w.category for w in caught] == [cache.CacheWarning]
    assert "Read-only file system" in str(caught[0].message)
    assert not list(cache_dir.rglob("*.*"))


def child(script: str, cache_dir: Path, *args: str, limit_bytes: int | None = None) -> subprocess.CompletedProcess:
    """Run ``script`` in a fresh interpreter with ``cache_dir`` as the cache (optionally under a
    file-size limit: every write past it fails with EFBIG, as writes to a full disk fail)."""
    env = dict(os.environ, XPUC_CACHE_DIR=str(cache_dir))
    env.pop("XPUC_NO_CACHE", None)

    def limit():
        if limit_bytes is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args], env=env, capture_output=True,
                          text=True, timeout=300, preexec_fn=limit)


RUN_MODEL = """
    import json, sys, warnings
    import numpy as np, onnx
    import runtime
    model, x = onnx.load(sys.argv[1]), np.load(sys.argv[2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = [runtime.compile(model, input_shapes={"x": x.shape}).run({"x": x})[0] for _ in range(2)]
    print(json.dumps({"warnings": [f"{w.category.__name__}: {w.message}" for w in caught],
                      "outputs": [r.tolist() for r in results]}))
"""


def saved_inputs(tmp_path: Path) -> tuple[str, str]:
    model, x = tmp_path / "mlp.onnx", tmp_path / "x.npy"
    onnx.save(mlp(), model)
    np.save(x, X)
    return str(model), str(x)


def test_a_full_cache_folder_warns_once_and_compiles(cache_dir, tmp_path):
    done = child(RUN_MODEL, cache_dir, *saved_inputs(tmp_path), limit_bytes=0)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert len(report["warnings"]) == 1 and report["warnings"][0].startswith("CacheWarning")
    assert "File too large" in report["warnings"][0]
    for y in report["outputs"]:
        np.testing.assert_allclose(np.asarray(y, np.float32), expected(X), rtol=1e-5, atol=1e-5)
    assert not [p for p in cache_dir.rglob("*") if p.is_file()]  # no entry, no temp file left


# ------------------------------------------------------------------------ interruption
DIE_ON_RENAME = """
    import os, signal, sys
    import numpy as np, onnx
    real = os.replace
    def replace(src, dst, *args, **kwargs):
        if str(dst).endswith(sys.argv[3]):
            os.kill(os.getpid(), signal.SIGKILL)  # killed with the entry written but not in place
        return real(src, dst, *args, **kwargs)
    os.replace = replace
    import runtime
    x = np.load(sys.argv[2])
    runtime.compile(onnx.load(sys.argv[1]), input_shapes={"x": x.shape})
"""


@pytest.mark.parametrize("suffix", [".o", ".xpm"])
def test_a_compile_killed_while_writing_leaves_no_entry(cache_dir, tmp_path, suffix):
    done = child(DIE_ON_RENAME, cache_dir, *saved_inputs(tmp_path), suffix)
    assert done.returncode == -signal.SIGKILL
    assert not list(cache_dir.rglob("*" + suffix))
    left = list(cache_dir.rglob(cache.TEMP_PREFIX + "*"))
    assert left  # the whole entry was written to its temp file
    np.testing.assert_allclose(compile_mlp().run({"x": X})[0], expected(X), rtol=1e-5, atol=1e-5)
    assert_valid_entries(cache_dir)
    old = time.time() - cache.STALE_SECONDS - 1
    for path in left:
        os.utime(path, (old, old))
    runtime.compile(mlp(-W), input_shapes=SHAPES)  # a store trims stale temp files
    assert not list(cache_dir.rglob(cache.TEMP_PREFIX + "*"))


# ------------------------------------------------------------------------- concurrency
RACE = """
    import os, sys, time
    import numpy as np, onnx
    import runtime
    model, x = onnx.load(sys.argv[1]), np.load(sys.argv[2])
    while not os.path.exists(sys.argv[3]):  # start together
        time.sleep(0.001)
    np.save(sys.argv[4], runtime.compile(model, input_shapes={"x": x.shape}).run({"x": x})[0])
"""


def test_processes_compiling_one_model_at_once_agree_and_leave_one_entry(cache_dir, tmp_path):
    model, x = saved_inputs(tmp_path)
    go = tmp_path / "go"
    env = dict(os.environ, XPUC_CACHE_DIR=str(cache_dir))
    outs = [tmp_path / f"y{i}.npy" for i in range(4)]
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(RACE), model, x, str(go), str(out)], env=env,
                              stderr=subprocess.PIPE, text=True) for out in outs]
    time.sleep(1.0)  # let every process import xpuc first
    go.touch()
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    for out in outs:
        np.testing.assert_allclose(np.load(out), expected(X), rtol=1e-5, atol=1e-5)
    assert len(entries(cache_dir)) == 1
    assert not list(cache_dir.rglob(cache.TEMP_PREFIX + "*"))
    assert_valid_entries(cache_dir)
