"""Hardware targets as data: TOML spec files, validated on load into plain dataclasses.

Every number in a spec names where it came from, as ``{value = 108, source = "datasheet"}``
whose ``source`` is a key of the spec's ``[sources]`` table (a citation in words), and so does
every format an engine accumulates in (``{value = "f32", source = "..."}``). The
loader checks types, signs, unknown keys, families and number formats, and reports the
first problem as one :class:`TargetSpecError` naming the file and the key path. After
loading, numbers are plain floats on the dataclasses; ``Target.provenance`` maps each
key path to its source id, so reports can show where a figure came from.

The dataclass fields themselves are the schema: their annotations say which keys exist,
which are sourced numbers, and which may be left out (those with defaults). Every number
must be finite (TOML's ``nan`` and ``inf`` are refused) and its sign follows its kind:

- :data:`Num` (positive): what sizes or rates the hardware (a count, a clock, a peak, a
  capacity, a bandwidth, an efficiency, a lifetime). Zero would mean a machine that cannot
  run the work, and the schedulers divide by these.
- :data:`NonNeg` (zero allowed): what adds a cost (a latency, an overhead, an energy, a power
  draw, a price). Zero is a legitimate idealization: the cost it adds is then zero.
"""

from __future__ import annotations

import functools
import math
import tomllib
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from ir.errors import XpucError
from ir.formats import ENGINE_ONLY, engine_storage

from .collectives import TOPOLOGIES
from .families import FAMILIES

TARGETS_DIR = Path(__file__).parent / "targets"
ROLES = ("matrix", "vector")
MEMORY_ROLES = {
    "buffer": "software-managed on-chip memory the engines take operands from (GPU shared memory, TPU VMEM)",
    "l2": "on-chip cache shared by all cores, in front of the off-chip memory",
    "hbm": "off-chip memory that holds the model (HBM, GDDR, LPDDR)",
    "sram": "on-chip memory that holds the model on a chip without off-chip memory",
}
"""What each memory level is, as ``role`` in a spec: cost models address levels by role."""
LAUNCHES = {
    "stream": "the host launches every kernel on a stream: launch_overhead_s each",
    "graph": "the host launches the whole graph once per chip as a CUDA Graph (graph_launch_overhead_s); "
             "its kernels start one after another without host launches",
}
MODEL_STORES = ("hbm", "sram")

Num = float
"""A sourced positive number: ``{value = ..., source = "<key of [sources]>"}``."""

NonNeg = typing.Annotated[float, "zero allowed"]
"""A sourced number that may be zero (a latency, an overhead, an energy, a power, a price)."""

Dims = tuple[int, ...]
"""A sourced list of positive integers (an array or tile shape)."""

FormatName = typing.Annotated[str, "a number format"]
"""A sourced number format name (a DType short name or one of ``ir.formats.ENGINE_ONLY``)."""


class TargetSpecError(XpucError):
    """A target spec is missing, malformed, or names something xpuc does not know."""


@dataclass
class Emulation:
    """A format an engine multiplies as several passes in another (XLA on a TPU: float32 as six
    bfloat16 passes, a TF32-like product as three)."""

    via: str
    passes: Num


@dataclass
class Engine:
    """A kind of compute unit on a chip; ``count`` of them run in parallel.

    ops: op families (ir.ops ``OpDef.family``: matmul, conv, attention, norm, elementwise,
        reduce, pool, movement) or op types this engine runs.
    peak_ops_per_cycle: per unit and number format (DType short names: f16, bf16, i8 ...);
        its keys are the formats the engine runs.
    auto_cast: formats the vendor compiler converts by default before running here
        (e.g. f32 matmuls run as bf16 on a TPU's MXU, as TF32 on NVIDIA tensor cores).
    emulate: formats the engine multiplies as passes of another it lists, when asked to
        (``backends.precision``); their rate is that format's over the passes.
        (e.g. f32 matmuls run as bf16 on a TPU's MXU).
    accumulate: per listed format, the format the engine's arithmetic on it accumulates or
        computes in (bf16 x bf16 -> f32 on a TPU's MXU, i8 -> i32; a vector unit without bf16
        ALUs computes bf16 in f32). Every format of a matrix engine needs one, and every float
        format narrower than f32 of a vector engine; others compute in themselves. Read by
        ``backends.numerics``.
    array: rows x columns of a systolic array; dataflow: its stationary operand.
    weight_load_cycles: cycles a systolic array takes to load a fold's stationary operand
        into its second set of registers while the current fold streams (double-buffered
        weights); None: no preload, each fold fills and drains the pipeline.
    tile: a GPU thread block's output tile and K step (M, N, K).
    mma: a GPU tensor core's instruction shape (M, N, K): the least a thread block's tile
        shrinks to for a product with few rows or columns (None: tiles never shrink).
    zero_skipping: a matrix engine that skips multiplications by zero weights; schedules
        assume dense weights, and code compiled for the target counts what it skipped.
    efficiency: fraction of peak that well-shaped work reaches (fitted, says to what).
    """

    role: str
    count: Num
    clock_hz: Num
    peak_ops_per_cycle: dict[str, Num]
    ops: list[str]
    auto_cast: dict[str, str] = field(default_factory=dict)
    emulate: dict[str, Emulation] = field(default_factory=dict)
    accumulate: dict[str, FormatName] = field(default_factory=dict)
    array: Dims | None = None
    dataflow: str | None = None
    weight_load_cycles: Num | None = None
    tile: Dims | None = None
    mma: Dims | None = None
    zero_skipping: bool = False
    efficiency: Num = 1.0
    name: str = field(default="", metadata={"internal": True})

    @property
    def formats(self) -> list[str]:
        return list(self.peak_ops_per_cycle)

    def multiplies(self, fmt: str) -> bool:
        """It computes in ``fmt``, natively or in passes of another format (``emulate``)."""
        return fmt in self.peak_ops_per_cycle or fmt in self.emulate

    def passes(self, fmt: str) -> int:
        return int(self.emulate[fmt].passes) if fmt in self.emulate else 1

    def ops_per_cycle(self, fmt: str) -> float:
        """Per unit in ``fmt``: its listed figure, or the emulating format's over the passes."""
        if fmt in self.peak_ops_per_cycle:
            return self.peak_ops_per_cycle[fmt]
        return self.peak_ops_per_cycle[self.emulate[fmt].via] / self.emulate[fmt].passes

    def peak(self, fmt: str) -> float:
        """Operations per second of the whole chip's units in ``fmt``."""
        return self.count * self.clock_hz * self.ops_per_cycle(fmt)

    def handles(self, family: str, op_type: str) -> bool:
        return family in self.ops or op_type in self.ops

    def runs(self, family: str, op_type: str, fmt: str) -> str | None:
        """The format this engine would run the op in by default (after ``auto_cast``), or None."""
        if not self.handles(family, op_type):
            return None
        fmt = self.auto_cast.get(fmt, fmt)
        return fmt if fmt in self.peak_ops_per_cycle else None


@dataclass
class MemoryLevel:
    """One level of the memory hierarchy, per chip, listed innermost first; ``role`` is one of
    :data:`MEMORY_ROLES`, each at most once per chip."""

    name: str
    role: str
    capacity_bytes: Num
    bandwidth_bytes_per_s: Num
    latency_s: NonNeg
    efficiency: Num = 1.0
    energy_per_byte_j: NonNeg | None = None
    reserve_fraction: NonNeg = 0.0
    """Share of the capacity a serving runtime keeps for itself (context, workspaces, allocator
    slack); only the level that holds the model (``Target.outer``) reads it."""

    @property
    def effective_bandwidth(self) -> float:
        return self.bandwidth_bytes_per_s * self.efficiency


@dataclass
class Link:
    """A chip-to-chip interconnect, or the host link that fallbacks cross.

    bandwidth_bytes_per_s: per chip, in each direction; efficiency: the share of it that
        transfers and collectives reach (NCCL's bus bandwidth over the line rate).
    latency_s: one hop, chip to chip; collective_latency_s: fixed cost of one collective
        (launching it and the barrier that ends it), on top of its hops.
    topology: the interconnect's shape, which decides how a collective runs
        (``backends.collectives.TOPOLOGIES``); free text for the host link.
    domain_chips: chips linked closely enough for tensor parallelism (an NVLink node, a
        Groq node); default deployments keep their tensor-parallel degree within it unless
        an op's share would fit no chip.
    max_chips: most chips the interconnect connects.
    """

    bandwidth_bytes_per_s: Num
    latency_s: NonNeg
    topology: str = "point-to-point"
    flops_per_s: Num | None = None
    max_chips: Num | None = None
    efficiency: Num = 1.0
    collective_latency_s: NonNeg = 0.0
    domain_chips: Num = 1.0

    @property
    def effective_bandwidth(self) -> float:
        return self.bandwidth_bytes_per_s * self.efficiency


@dataclass
class Power:
    """Idle power always; then either TDP (dynamic power scales with activity) or energies."""

    idle_w: NonNeg
    tdp_w: Num | None = None
    energy_per_mac_j: NonNeg | None = None


@dataclass
class Price:
    usd_per_chip_hour: NonNeg | None = None
    purchase_usd: NonNeg | None = None
    amortization_years: Num | None = None

    def usd_per_second(self) -> float:
        if self.usd_per_chip_hour is not None:
            return self.usd_per_chip_hour / 3600
        return self.purchase_usd / (self.amortization_years * 365 * 24 * 3600)


@dataclass
class Calibration:
    """How the preset's calibration data was measured, as opposed to how a model runs.

    measurement_overhead_s: fixed time per measurement beyond the kernel itself (timer,
        synchronization, first launch); added only when comparing with that data
        (``backends.calibration``), never charged to a schedule.
    matrix_efficiency, memory_efficiency: the matrix engines' and the outer memory's
        efficiency on the isolated kernels the data timed, where they differ from what a serving
        stack sustains through a whole model (the engines' and the level's own ``efficiency``,
        which schedules use); None: the same.
    """

    measurement_overhead_s: NonNeg = 0.0
    matrix_efficiency: Num | None = None
    memory_efficiency: Num | None = None


@dataclass
class Target:
    name: str
    family: str
    summary: str
    sources: dict[str, str]
    engines: dict[str, Engine]
    memory: list[MemoryLevel]
    interconnect: Link
    host: Link
    power: Power
    price: Price
    launch_overhead_s: NonNeg = 0.0
    """Per kernel (a fused group of ops, ``backends.grouping``), charged by the scheduler to its first op."""
    sync_s: NonNeg = 0.0
    """Per kernel on a statically scheduled chip (SRAM dataflow): the kernel's operands stream
    across the chip's array of units and its results come back before a dependent kernel may
    start (fill, drain and the hand-over between kernels); charged with the launch."""
    launch: str = "stream"
    """How the host starts kernels (:data:`LAUNCHES`)."""
    graph_launch_overhead_s: Num = 0.0
    """Per launch of the whole graph as one CUDA Graph (``launch = "graph"``), once per chip."""
    calibration: Calibration = field(default_factory=Calibration)
    path: str = field(default="", metadata={"internal": True})
    provenance: dict[str, str] = field(default_factory=dict, metadata={"internal": True})

    def launch_s(self, first_on_chip: bool) -> float:
        """What starting a kernel costs the host: every kernel on a stream; the chip's first
        kernel alone when the graph is one CUDA Graph."""
        if self.launch == "graph":
            return self.graph_launch_overhead_s if first_on_chip else 0.0
        return self.launch_overhead_s

    def level(self, name: str) -> MemoryLevel:
        return self._levels[name]

    def by_role(self, role: str) -> MemoryLevel:
        """The level with ``role`` (:data:`MEMORY_ROLES`); a family's required roles always exist."""
        return self._roles[role]

    @property
    def outer(self) -> MemoryLevel:
        """The level that holds the model's tensors (HBM, or on-chip SRAM when there is none)."""
        return self._roles["hbm"] if "hbm" in self._roles else self._roles["sram"]

    @property
    def inner(self) -> list[MemoryLevel]:
        """Every level between the engines and the outer one."""
        return [m for m in self.memory if m is not self.outer]

    @functools.cached_property
    def _levels(self) -> dict[str, MemoryLevel]:
        return {m.name: m for m in self.memory}

    @functools.cached_property
    def _roles(self) -> dict[str, MemoryLevel]:
        return {m.role: m for m in self.memory}

    def bandwidth(self, level: str) -> float:
        """Bytes per second of a memory level, the interconnect, or the host link."""
        links = {"interconnect": self.interconnect, "host_link": self.host}
        return links[level].effective_bandwidth if level in links else self.level(level).effective_bandwidth


# ------------------------------------------------------------------------------- loading
def list_targets() -> list[str]:
    """Names of the bundled presets."""
    return sorted(p.stem for p in TARGETS_DIR.glob("*.toml"))


def load_target(name_or_path: str | Path) -> Target:
    """A bundled preset by name, or a spec file by path."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = TARGETS_DIR / f"{name_or_path}.toml"
        if not path.exists():
            raise TargetSpecError(f"unknown target {name_or_path!r}; presets: {', '.join(list_targets())} "
                                  "(or give a path to a .toml spec)")
    return parse_target(read_toml(path, TargetSpecError, "target spec"), str(path))


def read_toml(path: Path, error: type[XpucError], what: str) -> dict:
    """A TOML file as a dict; a missing or malformed file is one ``error`` naming it as ``what``."""
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path}: not valid TOML: {exc}") from None


def parse_target(data: dict, origin: str = "<spec>") -> Target:
    """Validate a spec already read into a dict (as tomllib returns it)."""
    sources = data.get("sources")
    if not isinstance(sources, dict) or not sources or not all(isinstance(v, str) for v in sources.values()):
        raise TargetSpecError(f"{origin}: needs a [sources] table of citations (id = \"text\") that numbers refer to")
    reader = _Reader(origin, sources)
    target = reader.build(Target, data, "")
    target.path, target.provenance = origin, reader.provenance
    _check_semantics(target, origin)
    return target


class _Reader:
    """Builds dataclasses from TOML tables, driven by the dataclasses' type annotations."""

    def __init__(self, origin: str, sources: dict[str, str]):
        self.origin, self.sources, self.provenance = origin, sources, {}

    def fail(self, path: str, message: str) -> typing.NoReturn:
        raise TargetSpecError(f"{self.origin}: {path or 'top level'}: {message}")

    def build(self, cls, table, path: str):
        if not isinstance(table, dict):
            self.fail(path, f"expected a table, got {type(table).__name__}")
        hints = typing.get_type_hints(cls, include_extras=True)
        schema = [f for f in fields(cls) if not f.metadata.get("internal")]
        unknown = sorted(set(table) - {f.name for f in schema})
        if unknown:
            self.fail(path, f"unknown key(s) {', '.join(unknown)}; known: {', '.join(f.name for f in schema)}")
        kwargs = {}
        for f in schema:
            if f.name not in table:
                if f.default is MISSING and f.default_factory is MISSING:
                    self.fail(_join(path, f.name), "is required")
                continue
            kwargs[f.name] = self.value(hints[f.name], table[f.name], _join(path, f.name))
        return cls(**kwargs)

    def value(self, hint, raw, path: str):
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin in (types.UnionType, typing.Union):  # X | None
            return self.value(next(a for a in args if a is not type(None)), raw, path)
        if hint is float:
            return float(self.sourced(raw, path, lambda v: _number(v) and v > 0, "a finite number > 0"))
        if hint == NonNeg:
            return float(self.sourced(raw, path, lambda v: _number(v) and v >= 0, "a finite number >= 0"))
        if hint == Dims:
            value = self.sourced(raw, path, lambda v: isinstance(v, list) and v and all(
                isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v), "a list of positive integers")
            return tuple(value)
        if hint == FormatName:
            return self.sourced(raw, path, lambda v: isinstance(v, str), "a number format name")
        if hint is bool:
            if not isinstance(raw, bool):
                self.fail(path, f"expected true or false, got {_kind(raw)}")
            return raw
        if hint is str:
            if not isinstance(raw, str):
                self.fail(path, f"expected text, got {_kind(raw)}")
            return raw
        if origin is list:
            if not isinstance(raw, list):
                self.fail(path, f"expected a list, got {_kind(raw)}")
            return [self.value(args[0], x, f"{path}[{i}]") for i, x in enumerate(raw)]
        if origin is dict:
            if not isinstance(raw, dict):
                self.fail(path, f"expected a table, got {_kind(raw)}")
            out = {k: self.value(args[1], v, _join(path, k)) for k, v in raw.items()}
            for k, v in out.items():
                if isinstance(v, Engine):
                    v.name = k
            return out
        return self.build(hint, raw, path)

    def sourced(self, raw, path: str, ok, what: str):
        if not isinstance(raw, dict) or set(raw) != {"value", "source"}:
            self.fail(path, f"give {{value = ..., source = \"...\"}}: every number names its source, got {raw!r}")
        if not ok(raw["value"]):
            self.fail(path, f"value must be {what}, got {raw['value']!r}")
        if raw["source"] not in self.sources:
            self.fail(path, f"source {raw['source']!r} is not in [sources] ({', '.join(self.sources)})")
        self.provenance[path] = raw["source"]
        return raw["value"]


def _check_semantics(t: Target, origin: str) -> None:
    """Rules that span fields: known family, roles, formats, what each family needs."""

    def fail(message: str) -> typing.NoReturn:
        raise TargetSpecError(f"{origin}: {message}")

    family = FAMILIES.get(t.family)
    if family is None:
        fail(f"unknown family {t.family!r}; known: {', '.join(FAMILIES)}")
    if not t.engines:
        fail("needs at least one [engines.NAME] table")
    if not t.memory:
        fail("needs at least one [[memory]] level")
    roles = [m.role for m in t.memory]
    for i, role in enumerate(roles):
        if role not in MEMORY_ROLES:
            fail(f"memory[{i}].role: unknown role {role!r}; known: {', '.join(MEMORY_ROLES)}")
        if roles.index(role) != i:
            fail(f"memory[{i}].role: {role!r} is also memory[{roles.index(role)}]'s; each role is one level")
    if sum(role in MODEL_STORES for role in roles) != 1:
        fail(f"memory needs exactly one level that holds the model ({' or '.join(MODEL_STORES)})")
    missing = [role for role in family.memory if role not in roles]
    if missing:
        fail(f"a {t.family} target's memory needs levels with role {', '.join(missing)}")
    for e in t.engines.values():
        if e.role not in ROLES:
            fail(f"engines.{e.name}.role: unknown role {e.role!r}; known: {', '.join(ROLES)}")
        for fmt in [*e.peak_ops_per_cycle, *e.auto_cast.keys(), *e.auto_cast.values(), *e.emulate, *e.accumulate.values()]:
            try:
                engine_storage(fmt)
            except ValueError as exc:
                fail(f"engines.{e.name}: unknown number format: {exc} (or {', '.join(ENGINE_ONLY)})")
        for fmt, how in e.emulate.items():
            if how.via not in e.peak_ops_per_cycle or how.passes < 1:
                fail(f"engines.{e.name}.emulate.{fmt}: via must be a format the engine lists, passes at least 1")
        problem = _accumulate_problem(e)
        if problem:
            fail(f"engines.{e.name}.accumulate: {problem}")
        problem = family.check_engine(e)
        if problem:
            fail(f"engines.{e.name}: {problem}")
        if e.zero_skipping and e.role != "matrix":
            fail(f"engines.{e.name}.zero_skipping: only a matrix engine skips zero weights")
        if not 0 < e.efficiency <= 1:
            fail(f"engines.{e.name}.efficiency must be in (0, 1], got {e.efficiency}")
    if t.launch not in LAUNCHES:
        fail(f"launch: unknown launch {t.launch!r}; known: {', '.join(LAUNCHES)}")
    if t.power.tdp_w is None and t.power.energy_per_mac_j is None:
        fail("power needs tdp_w or energy_per_mac_j (with energy_per_byte_j on memory levels)")
    if t.price.usd_per_chip_hour is None and (t.price.purchase_usd is None or not t.price.amortization_years):
        fail("price needs usd_per_chip_hour, or purchase_usd with amortization_years")
    if t.host.flops_per_s is None:
        fail("host needs flops_per_s: the rate fallbacks run at")
    if t.interconnect.topology not in TOPOLOGIES:
        fail(f"interconnect.topology: unknown {t.interconnect.topology!r}; known: {', '.join(TOPOLOGIES)}")
    for name, link in (("interconnect", t.interconnect), ("host", t.host)):
        if not 0 < link.efficiency <= 1:
            fail(f"{name}.efficiency must be in (0, 1], got {link.efficiency}")
    if t.interconnect.domain_chips < 1 or t.interconnect.domain_chips != int(t.interconnect.domain_chips):
        fail("interconnect.domain_chips must be a whole number of chips, at least 1, "
             f"got {t.interconnect.domain_chips}")
    if not 0 <= t.outer.reserve_fraction < 1:
        fail(f"{t.outer.name}.reserve_fraction must be in [0, 1), got {t.outer.reserve_fraction}")


def _accumulate_problem(e: Engine) -> str | None:
    """What is wrong with an engine's ``accumulate`` table, if anything: entries for formats it
    does not list, accumulators of another kind (float for float, integer for integer), or a
    missing entry where the spec must say (every format of a matrix engine, narrow floats of
    a vector engine)."""
    for fmt, acc in e.accumulate.items():
        if fmt not in e.peak_ops_per_cycle:
            return f"{fmt}: not a format the engine lists in peak_ops_per_cycle ({', '.join(e.formats)})"
        if engine_storage(fmt).is_float != engine_storage(acc).is_float:
            return f"{fmt}: accumulates in {acc}, another kind of number (float needs float, integer integer)"
    missing = [f for f in e.peak_ops_per_cycle if f not in e.accumulate and (
        e.role == "matrix" or (engine_storage(f).is_float and engine_storage(f).itemsize < 4))]
    if missing:
        return (f"needs an entry for {', '.join(missing)}: the format the engine's arithmetic on each "
                "accumulates in, with its source")
    return None


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _kind(v) -> str:
    return type(v).__name__


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key
