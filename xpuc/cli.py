"""The ``xpuc`` command line.

Every user error is an ``ir.XpucError``: printed as one line on stderr with exit status 1
(2 for bad command-line usage, as argparse does). ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__

DEFAULT_MODEL = Path(__file__).parent / "models" / "tiny-llama.onnx"
"""The bundled model that commands use when none is given: a 2-layer Llama-architecture export."""
DEFAULT_INPUT_SHAPES = {"input_ids": "1x128"}
"""Input shapes for the bundled model when none are given: one sequence of 128 tokens."""


def _input_shape(text: str) -> tuple[str, str]:
    name, sep, shape = text.rpartition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=DIMS such as input_ids=1x128, got {text!r}")
    return name, shape


def _input_file(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=FILE.npy such as input_ids=ids.npy, got {text!r}")
    return name, path


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xpuc", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"xpuc {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    commands = parser.add_subparsers(dest="command", required=True)

    imp = commands.add_parser("import", help="import, optimize and summarize a model")
    _model_arguments(imp)
    imp.add_argument("-o", "--output", help="write the optimized graph as ONNX to this file")
    printing = imp.add_mutually_exclusive_group()
    printing.add_argument("--print-after-all", action="store_true", help="print the IR after every pass")
    printing.add_argument("--print-after", action="append", default=[], metavar="PASS",
                          help="print the IR after the named pass (repeatable)")
    imp.add_argument("--no-optimize", action="store_true", help="skip the optimization pipeline")
    imp.add_argument("--print-ir", action="store_true", help="print the final IR")
    imp.add_argument("--dot", metavar="FILE", help="write the final graph as Graphviz DOT")
    imp.add_argument("--json", action="store_true", help="print the summary as JSON")
    _precision_argument(imp, "quantize the optimized graph's products to this format (docs/formats.md)")

    targets = commands.add_parser("targets", help="list the bundled hardware targets, or show one")
    targets.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    targets.add_argument("name", nargs="?", help="preset name or path to a .toml spec (with show)")

    sched = commands.add_parser("schedule", help="schedule a model on a hardware target and show the plan")
    _model_arguments(sched)
    sched.add_argument("-t", "--target", required=True, help="preset name (see `xpuc targets`) or .toml path")
    sched.add_argument("--json", metavar="FILE", help="write the schedule as JSON (schema: backends/report.py)")
    sched.add_argument("--trace", metavar="FILE", help="write a Chrome trace (open in ui.perfetto.dev)")
    sched.add_argument("--limit", type=int, default=40, help="show at most this many op rows (0: all)")
    _precision_argument(sched, "quantize the graph's products to this format before scheduling")
    models = commands.add_parser("models", help="list the bundled model configs (usable wherever a model is taken)")
    models.add_argument("--json", action="store_true", help="print the list as JSON")

    run = commands.add_parser("run", help="compile a model for this CPU, run it, and summarize the outputs")
    run.add_argument("model", nargs="?", default=str(DEFAULT_MODEL), help=MODEL_HELP)
    run.add_argument("--input", action="append", type=_input_file, default=[], metavar="NAME=FILE.npy",
                     help="feed an input from a .npy file (repeatable)")
    run.add_argument("--random", action="store_true", help="feed inputs not given by --input with random values")
    run.add_argument("--seed", type=int, default=0,
                     help="seed for --random and for a config's random weights (default 0)")
    run.add_argument("--input-shape", action="append", type=_input_shape, default=[], metavar="NAME=DIMS",
                     help="bind an input's shape, e.g. input_ids=1x128 (repeatable)")
    run.add_argument("-t", "--target", default="cpu",
                     help="cpu (default), or a hardware preset / .toml spec: the run computes as its engines do "
                          "(docs/formats.md) and emulates its cost")
    run.add_argument("--host-numerics", action="store_true",
                     help="with -t: compute in the host's float32, as onnxruntime does, not in the target's formats")
    run.add_argument("-o", "--output-dir", metavar="OUTDIR", help="save each output as OUTDIR/<name>.npy")
    _precision_argument(run, "run the model's products in this format (docs/formats.md)")
    run.add_argument("--accuracy", action="store_true",
                     help="with --precision or -t: also run in float32 on the same inputs and print the error of "
                          "each output")
    for sub in (imp, targets, sched, models, run):
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


MODEL_HELP = ("ONNX file, Hugging Face config.json, or bundled config name (see `xpuc models`); "
              "default: the bundled tiny Llama. Configs and the bundled model default to input_ids=1x128")


def _precision_argument(parser: argparse.ArgumentParser, help: str) -> None:
    from ir.formats import NAMES

    parser.add_argument("--precision", choices=NAMES, metavar="FORMAT", help=f"{help}; one of {', '.join(NAMES)}")


def _model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", default=str(DEFAULT_MODEL), help=MODEL_HELP)
    parser.add_argument("--input-shape", action="append", type=_input_shape, default=[], metavar="NAME=DIMS",
                        help="bind an input's shape, e.g. input_ids=1x128 (repeatable)")
    parser.add_argument("--no-weights", action="store_true", help="read shapes and dtypes only; skip weight data")


def _load(args):
    """The model as a graph: a config (preset name or config.json) is built weightless."""
    from frontends import hf
    from frontends import onnx as onnx_frontend

    if _is_config(args.model):
        return hf.load(args.model, input_shapes=_input_shapes(args))
    return onnx_frontend.load(args.model, input_shapes=_input_shapes(args), weights=not args.no_weights)


def _is_config(model: str) -> bool:
    """A Hugging Face config or preset name, rather than an ONNX file (an unknown name is an error)."""
    from frontends import hf
    from ir.errors import ModelLoadError

    if hf.recognizes(model):
        return True
    if not Path(model).exists() and "." not in Path(model).name:
        raise ModelLoadError(f"{model}: no such file, nor a bundled model config (`xpuc models` lists them)")
    return False


def _input_shapes(args) -> dict:
    """--input-shape bindings; the bundled model and configs default to DEFAULT_INPUT_SHAPES."""
    from frontends import hf

    shapes = dict(args.input_shape)
    if shapes or not (Path(args.model) == DEFAULT_MODEL or hf.recognizes(args.model)):
        return shapes
    return DEFAULT_INPUT_SHAPES


def _cmd_import(args) -> int:
    import ir
    from ir.passes import DEFAULT_PIPELINE, PASSES, PassManager, optimize, quantize
    from ir.summary import format_summary, summarize

    graph = _load(args)
    before = len(graph)
    timings, notes = {}, []
    if not args.no_optimize:
        manager = PassManager([(n, PASSES[n]) for n in DEFAULT_PIPELINE], print_after_all=args.print_after_all,
                              print_after=set(args.print_after), out=sys.stdout)
        graph = optimize(graph, manager=manager)
        timings, notes = manager.timings, manager.notes
    if args.precision:
        graph = quantize(graph, args.precision)
    summary = summarize(graph)
    if args.output:
        import onnx
        model = ir.to_onnx(graph)
        onnx.save(model, args.output, save_as_external_data=model.ByteSize() > 2**31 - 2**20)
    if args.dot:
        Path(args.dot).write_text(ir.to_dot(graph))
    if args.print_ir:
        print(ir.format_graph(graph))
    if args.json:
        print(json.dumps({**summary.to_dict(), "ops_before_optimization": before,
                          "pass_seconds": {k: round(v, 6) for k, v in timings.items()}, "pass_notes": notes},
                         indent=2))
    else:
        print(format_summary(summary))
        if not args.no_optimize:
            print(f"optimized: {before} -> {len(graph)} ops in {sum(timings.values()):.2f} s")
        _print_notes(notes)
    return 0


def _optimize(graph):
    """The default pipeline, printing the notes of passes that could not run."""
    from ir.passes import DEFAULT_PIPELINE, PASSES, PassManager

    manager = PassManager([(n, PASSES[n]) for n in DEFAULT_PIPELINE])
    graph = manager.run(graph.copy())
    _print_notes(manager.notes)
    return graph


def _print_notes(notes: list[str]) -> None:
    for note in notes:
        print(f"note: {note}")


def _cmd_targets(args) -> int:
    import backends

    if args.action == "list":
        for name in backends.list_targets():
            target = backends.load_target(name)
            print(f"{name:18} {target.family:14} {target.summary}")
        return 0
    if not args.name:
        raise backends.TargetSpecError("`xpuc targets show` needs a preset name or a .toml path")
    target = backends.load_target(args.name)
    print(Path(target.path).read_text().rstrip())
    return 0


def _cmd_schedule(args) -> int:
    import backends
    from backends import report

    target = backends.load_target(args.target)
    graph = _optimize(_load(args))
    if args.precision:
        from ir.passes import quantize

        graph = quantize(graph, args.precision)
    schedule = backends.schedule(graph, target)
    print(report.format_table(schedule, limit=args.limit or None))
    if args.json:
        Path(args.json).write_text(report.to_json(schedule))
    if args.trace:
        Path(args.trace).write_text(json.dumps(report.to_chrome_trace(schedule)))
    return 0


def _cmd_models(args) -> int:
    from frontends import hf

    rows = [hf.describe(name) for name in hf.presets()]
    if args.json:
        print(json.dumps([row.__dict__ for row in rows], indent=2))
        return 0
    print(f"{'name':18} {'family':8} {'parameters':>17} {'layers':>6} {'hidden':>6} {'heads/kv':>8} {'context':>8}")
    for r in rows:
        heads = f"{r.heads}/{r.kv_heads}" if r.heads else "-"  # Mamba has no attention
        print(f"{r.name:18} {r.family:8} {r.parameters:17,} {r.layers:6} {r.hidden:6} {heads:>8} {r.context:8}")
    return 0


def _cmd_run(args) -> int:
    import runtime
    from frontends import hf
    from ir.errors import XpucError
    from runtime import feeds as io

    numerics = f"on {args.target}" if args.target != "cpu" and not args.host_numerics else ""
    if args.accuracy and not (args.precision or numerics):
        raise XpucError("--accuracy compares a run in another format with the float32 one: give --precision, "
                        "or -t without --host-numerics")
    model = args.model
    if _is_config(model):  # a config has no weights: run it with seeded random ones
        model = hf.load(model, weights="random", seed=args.seed, input_shapes=_input_shapes(args))
    compiled = runtime.compile(model, args.target, input_shapes=_input_shapes(args), precision=args.precision,
                               host_numerics=args.host_numerics)
    feeds = io.load_feeds(dict(args.input))
    if args.random:
        feeds = io.random_feeds(compiled, feeds, seed=args.seed)
    outputs = compiled.run(feeds)
    for name, array in zip(compiled.output_names, outputs):
        print(io.describe(name, array))
    if args.accuracy:
        from runtime.accuracy import compare_outputs

        reference = runtime.compile(model, input_shapes=_input_shapes(args)).run(feeds)
        for name, accuracy in compare_outputs(compiled.output_names, outputs, reference).items():
            how = " ".join(part for part in (f"in {args.precision}" if args.precision else "", numerics) if part)
            print(f"{name} {how} against float32: {accuracy}")
    if compiled.last_cost is not None:
        cost = compiled.last_cost
        print(f"emulated on {cost.target} ({cost.family}): latency {cost.latency_s * 1e3:.4f} ms, "
              f"energy {cost.energy_j:.4g} J, cost ${cost.cost_usd:.4g}, {cost.chips} chip(s)")
    if args.output_dir:
        paths = io.save_outputs(args.output_dir, compiled.output_names, outputs)
        print(f"saved {len(paths)} output(s) to {args.output_dir}")
    return 0


COMMANDS = {"import": _cmd_import, "targets": _cmd_targets, "schedule": _cmd_schedule, "models": _cmd_models,
            "run": _cmd_run}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from ir.errors import XpucError

    try:
        return COMMANDS[args.command](args)
    except XpucError as exc:
        if args.debug:
            raise
        print(f"xpuc: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # unwritable output paths and the like
        if args.debug:
            raise
        print(f"xpuc: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
