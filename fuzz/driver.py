"""``python -m fuzz --seed S --count N`` (:func:`main`): fuzz N programs, report, minimize and save failures.

Programs run in worker processes, so a segfault or a hang in generated code is recorded
against its program (and the worker replaced) instead of ending the run. Each result is
one JSON line in ``--log``; the summary counts programs that passed, failed, crashed, or
were skipped because onnxruntime itself cannot run them. With ``--minimize``, the first
program of each distinct failure is shrunk and saved under ``--fixtures``.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import multiprocessing
import multiprocessing.connection
import time
from collections import Counter
from pathlib import Path

from .minimize import FIXTURES


def run_one(seed: int, index: int, max_ops: int) -> dict:
    from .check import OracleError, check
    from .generate import generate

    start = time.perf_counter()
    result = {"index": index}
    try:
        case = generate(seed, index, max_ops=max_ops)
        result.update(nodes=len(case.model.graph.node), generators=case.generators, target=case.target,
                      bind=case.bind)
        failures = check(case)
        result["status"] = "crash" if any(f.crash for f in failures) else "fail" if failures else "ok"
        result["failures"] = [{"kind": f.kind, "text": str(f)[:1000]} for f in failures]
    except OracleError as exc:
        result.update(status="skipped", reason=str(exc))
    except Exception as exc:  # the generator itself broke: a fuzzer bug, reported as such
        result.update(status="generator", reason=f"{type(exc).__name__}: {exc}")
    result["seconds"] = round(time.perf_counter() - start, 3)
    return result


def minimize_one(seed: int, index: int, max_ops: int, kind: str, folder: str) -> str | None:
    from .check import check
    from .generate import generate
    from .minimize import minimize, save

    case = generate(seed, index, max_ops=max_ops)
    failure = next((f for f in check(case) if f.kind == kind), None)
    if failure is None:
        return None
    small = minimize(case, failure)
    return str(save(small, next(f for f in check(small) if f.kind == kind), Path(folder)))


TASKS = {"run_one": run_one, "minimize_one": minimize_one}


def _serve(conn) -> None:
    faulthandler.enable()  # a segfault in generated code prints where Python was, on stderr
    while True:
        task = conn.recv()
        if task is None:
            return
        fn, args = task
        conn.send(TASKS[fn](*args))


class Worker:
    """One process running tasks; replaced when it dies or overruns its time."""

    def __init__(self, context):
        self.context = context
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child,))
        self.process.start()
        self.task = None
        self.started = 0.0

    def submit(self, task, tag) -> None:
        self.conn.send(task)
        self.task, self.started = tag, time.monotonic()

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()


def _run(tasks: list, jobs: int, timeout: float, on_result, on_death) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [Worker(context) for _ in range(jobs)]
    pending = list(reversed(tasks))
    try:
        while pending or any(w.task is not None for w in workers):
            for w in workers:
                if w.task is None and pending:
                    tag, task = pending.pop()
                    w.submit(task, tag)
            busy = [w for w in workers if w.task is not None]
            ready = multiprocessing.connection.wait([w.conn for w in busy] + [w.process.sentinel for w in busy], 1.0)
            for i, w in enumerate(workers):
                if w.task is None:
                    continue
                overdue = time.monotonic() - w.started > timeout
                if w.conn in ready:
                    try:
                        on_result(w.task, w.conn.recv())
                        w.task = None
                        continue
                    except (EOFError, OSError):
                        pass
                if w.conn in ready or w.process.sentinel in ready or overdue:
                    w.stop()
                    reason = f"timed out after {timeout:.0f} s" if overdue and w.process.exitcode is None or \
                        w.process.exitcode == -9 else f"worker died (exit code {w.process.exitcode})"
                    on_death(w.task, reason)
                    workers[i] = Worker(context)
    finally:
        for w in workers:
            try:
                w.conn.send(None)
            except OSError:
                pass
            w.process.join(5)
            w.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", type=int, default=100)
    parser.add_argument("--start", type=int, default=0, help="first program index (resume a run)")
    parser.add_argument("--max-ops", type=int, default=10, help="most op generators applied per program")
    parser.add_argument("--jobs", type=int, default=1, help="worker processes")
    parser.add_argument("--timeout", type=float, default=300, help="seconds one program may take")
    parser.add_argument("--log", help="write one JSON line per program here")
    parser.add_argument("--minimize", action="store_true", help="shrink and save the first program of each failure")
    parser.add_argument("--fixtures", default=str(FIXTURES), help="where --minimize saves fixtures")
    args = parser.parse_args(argv)

    log = open(args.log, "a") if args.log else None
    status: Counter = Counter()
    first: dict[str, tuple[int, str]] = {}
    start = time.perf_counter()

    def record(index, result):
        status[result["status"]] += 1
        for f in result.get("failures", []):
            first.setdefault(f["kind"], (index, f["text"]))
        if result["status"] not in ("ok", "skipped"):
            print(f"[{index}] {result['status']}: " + "; ".join(
                f["text"][:300] for f in result.get("failures", [])) + result.get("reason", ""), flush=True)
        if log:
            log.write(json.dumps(result) + "\n")
            log.flush()
        done = sum(status.values())
        if done % 500 == 0:
            print(f"... {done} programs, {dict(status)}, {time.perf_counter() - start:.0f} s", flush=True)

    def died(index, reason):
        record(index, {"index": index, "status": "crash", "failures": [{"kind": "died", "text": reason}]})

    tasks = [(i, ("run_one", (args.seed, i, args.max_ops))) for i in range(args.start, args.start + args.count)]
    _run(tasks, args.jobs, args.timeout, record, died)
    elapsed = time.perf_counter() - start
    print(f"seed {args.seed}, programs {args.start}..{args.start + args.count - 1}: {dict(status)} "
          f"in {elapsed:.0f} s ({elapsed / max(args.count, 1):.2f} s per program)")
    for kind, (index, text) in sorted(first.items()):
        print(f"  {kind}: first at index {index}: {text[:300]}")
    if args.minimize and first:
        saved = []
        programs: dict[int, str] = {}  # one fixture per program, for the first of its failures
        for kind, (index, _) in sorted(first.items(), key=lambda item: item[1][0]):
            if kind != "died":
                programs.setdefault(index, kind)
        tasks = [((kind, index), ("minimize_one", (args.seed, index, args.max_ops, kind, args.fixtures)))
                 for index, kind in programs.items()]
        _run(tasks, args.jobs, args.timeout * 20, lambda tag, path: saved.append((tag, path)),
             lambda tag, reason: saved.append((tag, f"minimizing failed: {reason}")))
        for (kind, index), path in saved:
            print(f"  {kind} (index {index}) -> {path}")
    if log:
        log.close()
    return 0 if set(status) <= {"ok", "skipped"} else 1

