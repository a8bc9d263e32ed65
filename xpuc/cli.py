"""The ``xpuc`` command line.

Every user error is an ``ir.XpucError``: printed as one line on stderr with exit status 1
(2 for bad command-line usage, as argparse does). ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
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
    targets.add_argument("--formats", action="store_true",
                         help="every engine's number formats and peaks (with show: that target's only)")

    sched = commands.add_parser("schedule", help="schedule a model on a hardware target and show the plan")
    _model_arguments(sched)
    sched.add_argument("-t", "--target", required=True, help="preset name (see `xpuc targets`) or .toml path")
    sched.add_argument("--json", metavar="FILE", help="write the schedule as JSON (schema: backends/report.py)")
    sched.add_argument("--trace", metavar="FILE", help="write a Chrome trace (open in ui.perfetto.dev)")
    sched.add_argument("--limit", type=int, default=40, help="show at most this many op rows (0: all)")
    _precision_argument(sched, "cost every target in this format (native: the graph's types, as each vendor "
                               "runs them); the graph is not rewritten (docs/schedules.md)")
    _launch_argument(sched)
    _deployment_arguments(sched)
    comp = commands.add_parser("compare", help="one model on several targets: cost, efficiency, porting cost, "
                                               "accuracy and a performance-portability score (docs/portability.md)")
    _model_arguments(comp)
    which = comp.add_mutually_exclusive_group(required=True)
    which.add_argument("-t", "--targets", help="comma-separated presets or .toml paths, e.g. h100-sxm,tpu-v5e,groq-lpu")
    which.add_argument("--all", action="store_true", help="every bundled preset")
    _precision_argument(comp, "cost every target in this format (the precision policy of `xpuc schedule`)")
    comp.add_argument("--latency-target", type=float, metavar="MS",
                      help="mark targets whose pass takes longer than this many milliseconds")
    comp.add_argument("--seed", type=int, default=0, help="seed of the inputs the accuracy runs share (default 0)")
    comp.add_argument("--no-accuracy", action="store_true", help="skip the runs that measure accuracy")
    comp.add_argument("--json", metavar="FILE",
                      help="write the comparison as JSON (schema: backends/portability_report.py)")
    comp.add_argument("--csv", metavar="FILE", help="write one CSV row per target")
    comp.add_argument("--html", metavar="FILE", help="write a self-contained HTML report with plots (needs matplotlib)")
    _deployment_arguments(comp)
    serving = comp.add_argument_group("LLM options", "with --llm, each target also serves the decoder as `xpuc llm` "
                                                     "does: TTFT, TPOT, tokens/s, $/Mtok, J/token (docs/llm.md)")
    serving.add_argument("--llm", action="store_true", help="add each target's serving analysis (a decoder only), "
                                                            "at the batch asked for and at batch 1")
    _serving_arguments(serving)
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
    gen = commands.add_parser("generate", help="generate tokens greedily with a KV cache on this CPU")
    gen.add_argument("model", nargs="?", default=str(DEFAULT_MODEL), help=MODEL_HELP.split(". ")[0])
    gen.add_argument("--prompt-ids", required=True, metavar="IDS", help="comma-separated token ids, e.g. 1,2,3")
    gen.add_argument("--max-new-tokens", type=int, default=16, metavar="N", help="tokens to generate (default 16)")
    gen.add_argument("--max-len", type=int, metavar="N",
                     help="positions the KV cache holds (default: prompt + new tokens)")
    gen.add_argument("-t", "--target", help="a hardware preset / .toml spec: also report its emulated TTFT "
                                            "and time per token")
    gen.add_argument("--no-cache", action="store_true", help="recompute the whole sequence for every token")
    gen.add_argument("--seed", type=int, default=0, help="seed for a config's random weights (default 0)")
    gen.add_argument("--json", metavar="FILE", help="write the tokens and timings as JSON")
    sweep = commands.add_parser("sweep", help="evaluate a design-space sweep on Dask: Parquet rows, Pareto fronts "
                                              "(docs/sweeps.md)")
    sweep.add_argument("spec", help="sweep spec .toml (axes, variants, report)")
    sweep.add_argument("-o", "--output", help="Parquet results folder (default: the spec's name + .parquet)")
    sweep.add_argument("--html", metavar="FILE", help="write the report (Pareto chart, best point per target)")
    sweep.add_argument("--scheduler", metavar="ADDRESS", help="a running Dask scheduler, tcp://HOST:PORT "
                                                              "(default: a local cluster)")
    sweep.add_argument("--workers", type=int, help="worker processes of the local cluster (default: one per core)")
    sweep.add_argument("--resume", action="store_true", help="continue into the output, skipping points it holds")
    llm = _llm_parser(commands)
    for sub in (imp, targets, sched, comp, models, run, gen, sweep, llm):
        sub.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return parser


MODEL_HELP = ("ONNX file, Hugging Face config.json, or bundled config name (see `xpuc models`); "
              "default: the bundled tiny Llama. Configs and the bundled model default to input_ids=1x128")


def _precision_argument(parser: argparse.ArgumentParser, help: str) -> None:
    from ir.formats import NAMES

    parser.add_argument("--precision", choices=NAMES, metavar="FORMAT", help=f"{help}; one of {', '.join(NAMES)}")


def _deployment_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("deployment", "default: the smallest that fits weights, KV cache, activations "
                                                    "and the runtime reserve on every chip (docs/schedules.md)")
    group.add_argument("--chips", type=int, metavar="N", help="chips in the deployment (tp x pp)")
    group.add_argument("--tp", type=int, metavar="N", help="tensor-parallel degree: chips that split each op")
    group.add_argument("--pp", type=int, metavar="N", help="pipeline-parallel degree: stages of consecutive ops")
    group.add_argument("--ep", action="store_true", help="expert parallelism: cut mixtures of experts by experts "
                       "over each stage's tp chips (E/tp whole experts per chip, tokens sent to their experts by "
                       "all-to-all) instead of by hidden units")


def _serving_arguments(parser) -> None:
    """The requests of a serving analysis (``xpuc llm``, ``xpuc compare --llm``)."""
    from backends.llm.analysis import GEN_LEN, MAX_BATCH, PROMPT_LEN

    parser.add_argument("--batch", type=int, metavar="B", help="requests served together (default: the largest "
                                                               f"whose KV cache fits, at most {MAX_BATCH})")
    parser.add_argument("--prompt-len", type=int, default=PROMPT_LEN, metavar="L",
                        help=f"prompt tokens per request (default {PROMPT_LEN})")
    parser.add_argument("--gen-len", type=int, default=GEN_LEN, metavar="G",
                        help=f"generated tokens per request (default {GEN_LEN})")


def _launch_argument(parser: argparse.ArgumentParser) -> None:
    from backends.target import LAUNCHES

    parser.add_argument("--launch", choices=list(LAUNCHES), help="how the host starts kernels (default: the "
                        "target's): " + "; ".join(f"{k}: {v}" for k, v in LAUNCHES.items()))


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
    from backends import capabilities

    if args.formats:
        names = [args.name] if args.action == "show" and args.name else backends.list_targets()
        print(capabilities.format_table([backends.load_target(n) for n in names]))
        return 0
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
    if args.launch:
        target = dataclasses.replace(target, launch=args.launch)
    graph = _optimize(_load(args))
    schedule = backends.schedule(graph, target, precision=args.precision or "native",
                                 chips=args.chips, tp=args.tp, pp=args.pp, ep=args.ep)
    print(report.format_table(schedule, limit=args.limit or None))
    if args.json:
        Path(args.json).write_text(report.to_json(schedule))
    if args.trace:
        Path(args.trace).write_text(json.dumps(report.to_chrome_trace(schedule)))
    return 0


def _cmd_compare(args) -> int:
    import backends
    from backends import portability, portability_report

    from . import compare_serving

    _check_serving_options(args)
    names = backends.list_targets() if args.all else [n for n in args.targets.split(",") if n]
    targets = [backends.load_target(n) for n in names]
    graph = _optimize(_load(args))
    if args.llm:
        compare_serving.check(args.model, graph, args.batch, args.prompt_len, args.gen_len)
    accuracy, missing = None, ""
    if any(v.weightless for v in graph.values.values()):
        missing = "n/a: the model has no weights to run"
    elif args.no_accuracy:
        missing = "not measured (--no-accuracy)"
    else:
        from runtime.accuracy import AgainstFloat32

        accuracy = AgainstFloat32(args.model, input_shapes=_input_shapes(args), seed=args.seed)
    latency = None if args.latency_target is None else args.latency_target / 1e3
    comparison = portability.compare(graph, targets, model=Path(args.model).stem if Path(args.model).exists()
                                     else args.model, precision=args.precision, accuracy=accuracy,
                                     accuracy_missing=missing, latency_target_s=latency, chips=args.chips,
                                     tp=args.tp, pp=args.pp, ep=args.ep)
    serving = None
    if args.llm:
        serving = compare_serving.serve(args.model, targets, args.precision or "native", args.chips, args.tp, args.pp,
                                        args.batch, args.prompt_len, args.gen_len, ep=args.ep)
    print(portability_report.format_table(comparison, serving))
    if args.json:
        Path(args.json).write_text(portability_report.to_json(comparison, serving))
    if args.csv:
        Path(args.csv).write_text(portability_report.to_csv(comparison, serving))
    if args.html:
        from backends import portability_html, portability_serving

        points = portability_serving.points(serving) if serving else None
        Path(args.html).write_text(portability_html.to_html(comparison, serving=points))
    return 0


def _check_serving_options(args) -> None:
    """The LLM options of ``xpuc compare`` describe the requests of --llm: one error without it."""
    from backends.llm.analysis import GEN_LEN, PROMPT_LEN
    from ir.errors import XpucError

    if not args.llm and (args.batch is not None or (args.prompt_len, args.gen_len) != (PROMPT_LEN, GEN_LEN)):
        raise XpucError("--batch, --prompt-len and --gen-len describe the requests that --llm serves: add --llm")


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


def _cmd_generate(args) -> int:
    import runtime
    from runtime.llm import GenerationError

    try:
        prompt = [int(t) for t in args.prompt_ids.replace(" ", "").split(",") if t]
    except ValueError:
        raise GenerationError(f"--prompt-ids takes comma-separated integers, got {args.prompt_ids!r}") from None
    _is_config(args.model)  # an unknown name is an error before anything compiles
    max_len = args.max_len or len(prompt) + args.max_new_tokens
    llm = runtime.compile_llm(args.model, max_len=max_len, target=args.target, kv_cache=not args.no_cache,
                              seed=args.seed)
    result = llm.generate(prompt, args.max_new_tokens)
    how = (f"KV cache of {max_len} positions ({llm.cache.nbytes:,} bytes)" if llm.mode == "kv-cache"
           else f"no KV cache: each token recomputes {max_len} positions")
    print(f"model {Path(args.model).name}: {how}")
    print(f"prompt ({len(prompt)}): {' '.join(map(str, prompt))}")
    print(f"generated ({len(result.tokens)}): {' '.join(map(str, result.tokens))}")
    per_token = f", then {result.host_tpot_s * 1e3:.3f} ms per token" if result.host_tpot_s is not None else ""
    print(f"this CPU: first token {result.host_ttft_s * 1e3:.3f} ms{per_token}")
    if result.ttft_s is not None:
        per_token = f", then {result.tpot_s * 1e6:.2f} us per token" if result.tpot_s is not None else ""
        print(f"emulated on {result.target}: time to first token {result.ttft_s * 1e6:.2f} us{per_token}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "model": args.model, "mode": llm.mode, "max_len": max_len, "prompt_ids": prompt,
            "tokens": result.tokens, "host": {"ttft_s": result.host_ttft_s, "tpot_s": result.host_tpot_s},
            "target": result.target, "ttft_s": result.ttft_s, "tpot_s": result.tpot_s, "step_s": result.step_s},
            indent=2) + "\n")
    return 0


SWEEP_PACKAGES = ("dask", "distributed", "pyarrow", "tqdm")


def _cmd_sweep(args) -> int:
    from ir.errors import XpucError

    try:
        from xpuc import sweep
        from xpuc.sweep.html import page
        from xpuc.sweep.tables import format_report
    except ModuleNotFoundError as exc:
        if exc.name.split(".")[0] not in SWEEP_PACKAGES:
            raise
        raise XpucError(f"xpuc sweep needs {exc.name}: pip install 'xpuc[sweep]'") from None
    output = args.output or Path(args.spec).with_suffix(".parquet").name
    result = sweep.run(args.spec, output, scheduler=args.scheduler, workers=args.workers, resume=args.resume)
    print(format_report(result))
    if args.html:
        Path(args.html).write_text(page(result))
    return 0


# ------------------------------------------------------------------------------------- xpuc llm
def _llm_parser(commands) -> argparse.ArgumentParser:
    from backends.llm.links import DEFAULT_LINK, links

    llm = commands.add_parser("llm", help="serving analysis of an LLM on a target: TTFT, TPOT, tokens/s, $ and J "
                                          "per token, memory per chip; with traffic, a serving simulation (docs/llm.md)")
    llm.add_argument("model", help=MODEL_HELP.split(". ")[0])
    llm.add_argument("-t", "--target", help="preset name (see `xpuc targets`) or .toml path")
    _precision_argument(llm, "cost in this format through the precision policy (weights, activations, KV cache); "
                             "bf16/fp16 build the model in that type")
    _deployment_arguments(llm)
    _serving_arguments(llm)
    llm.add_argument("--json", metavar="FILE", help="write the report as JSON (keys defined in docs/llm.md)")
    traffic = llm.add_argument_group("traffic", "simulate continuous batching with a paged KV cache "
                                                "(backends/llm/serving.py) on step costs from the cost model")
    traffic.add_argument("--rate", type=float, metavar="R", help="Poisson arrivals, R requests per second")
    traffic.add_argument("--requests", type=int, default=1000, metavar="N", help="requests with --rate (default 1000)")
    traffic.add_argument("--seed", type=int, default=0, help="seed of the arrivals (default 0)")
    traffic.add_argument("--trace", metavar="FILE.csv", help="requests from a CSV: arrival_s,prompt_tokens,output_tokens")
    traffic.add_argument("--slo-ttft", type=float, metavar="S", help="TTFT objective in seconds, for goodput")
    traffic.add_argument("--slo-tpot", type=float, metavar="S", help="TPOT objective in seconds, for goodput")
    traffic.add_argument("--chunk", type=int, metavar="TOKENS", help="chunked prefill: token budget per iteration")
    traffic.add_argument("--max-seqs", type=int, default=256, metavar="N",
                         help="batch slots per replica (vLLM's max_num_seqs; default 256)")
    split = llm.add_argument_group("disaggregation", "prefill on one pool, decode on another, the KV cache moved "
                                                     f"between them (default traffic: --rate 1)")
    split.add_argument("--prefill-on", metavar="TARGET", help="target of the prefill pool")
    split.add_argument("--decode-on", metavar="TARGET", help="target of the decode pool")
    split.add_argument("--prefill-chips", type=int, metavar="N", help="chips per prefill replica (default: smallest fit)")
    split.add_argument("--decode-chips", type=int, metavar="N", help="chips per decode replica (default: smallest fit)")
    split.add_argument("--link", default=DEFAULT_LINK, choices=list(links()),
                       help=f"what carries the KV cache (default {DEFAULT_LINK}; figures and sources in "
                            "backends/llm/links.toml)")
    return llm


def _cmd_llm(args) -> int:
    from . import llm

    _is_config(args.model)  # an unknown name is one error before anything is built
    return llm.run(args)


COMMANDS = {"import": _cmd_import, "targets": _cmd_targets, "schedule": _cmd_schedule, "compare": _cmd_compare,
            "models": _cmd_models, "run": _cmd_run, "generate": _cmd_generate, "sweep": _cmd_sweep, "llm": _cmd_llm}


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
