"""Memory-access tracer for Numba CUDA kernels in the CUDA simulator: coalescing, bank conflicts, shared races.

``trace(kernel, griddim, blockdim, *args)`` launches the kernel once in Numba's CUDA simulator with every
array argument and every ``cuda.shared.array`` wrapped in a recording proxy, then groups the recorded
accesses into warp-wide requests: the accesses made by the threads of one warp (linear thread index in
the block, x fastest, 32 per warp) at the same bytecode instruction, for the same occurrence of that
instruction in each thread (so loop iterations form separate requests, and threads that skip a branch
simply take no part in its requests, as with masked lanes).

Metrics, per warp-wide request:

* global: ``sectors`` = distinct 32-byte sectors touched; ``ideal`` = ceil(distinct bytes requested / 32);
  efficiency = sum(ideal) / sum(sectors) over the selected requests (1.0 = perfectly coalesced).
* shared: ``wavefronts`` = the most distinct 4-byte words that fall in one of the 32 banks (several lanes
  on one word are a broadcast); ``ideal`` = ceil(distinct words / 32); extra = wavefronts - ideal; the
  degree is ceil(wavefronts / ideal), the usual "N-way" conflict for 4-byte data. Atomics are left out.
* races: within one block and one barrier interval (the accesses between two ``syncthreads()`` of each
  thread), a shared location written by one thread and read or written by another; an atomic update
  counts as a write against plain accesses but never races with other atomics.

Addresses model ``cudaMalloc``: each allocation (the numpy buffer that owns the data) is taken to start
on a fresh 256-byte boundary and an element's address is its byte offset from that buffer's start, found
from the real data pointers, so views, strides, dtypes and C/F order are all accounted for. Shared
arrays are each taken to start at bank 0.

Not modelled: caches (L1/L2 hits, so repeated or broadcast reads still count their sectors), timing,
warp divergence cost, instruction replay, local memory (``cuda.local.array`` is not traced), races in
global memory, bank conflicts of atomics, and intra-warp ordering (threads of a warp are treated like any
other pair of threads). A device function called from two call sites counts as one instruction.
"""

from __future__ import annotations

import dis
import inspect
import itertools
import linecache
import operator
import os
import re
import sys
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

WARP_SIZE = 32
SECTOR_BYTES = 32
BANKS = 32
BANK_BYTES = 4
LOAD, STORE, ATOMIC = "load", "store", "atomic"
KINDS = (LOAD, STORE, ATOMIC)
_ALLOC_SHIFT = 40  # allocation k occupies addresses [k << 40, (k + 1) << 40): aligned and disjoint
_CONFLICTS = {LOAD: (STORE, ATOMIC), STORE: (STORE, LOAD, ATOMIC), ATOMIC: (STORE, LOAD)}
_HAZARD = {(STORE, LOAD): "RAW", (ATOMIC, LOAD): "RAW", (LOAD, STORE): "WAR", (LOAD, ATOMIC): "WAR"}
_VERBS = {LOAD: "read it", STORE: "wrote it", ATOMIC: "updated it atomically"}
_ATOMICS = ("add", "sub", "and_", "or_", "xor", "inc", "dec", "exch", "max", "min", "nanmax", "nanmin", "cas")
_SHARED_NAME = re.compile(r"(\w+)\s*=\s*[\w.]*shared\.array\s*\(")


@dataclass(frozen=True)
class GlobalStat:
    """Global-memory traffic of one array in one direction, in 32-byte sectors."""

    array: str
    position: int | None  # argument position of the array
    kind: str  # "load", "store" or "atomic"
    requests: int  # warp-wide requests
    sectors: int  # distinct 32-byte sectors touched, summed over requests
    ideal_sectors: int  # sum over requests of ceil(distinct bytes requested / 32)
    bytes_requested: int  # distinct bytes requested, summed over requests

    @property
    def efficiency(self) -> float:
        """ideal_sectors / sectors: 1.0 when every request touches as few sectors as possible."""
        return self.ideal_sectors / self.sectors if self.sectors else 1.0


@dataclass(frozen=True)
class SharedStat:
    """Shared-memory bank behaviour of one shared array in one direction."""

    array: str
    kind: str  # "load" or "store" (atomics are left out)
    requests: int  # warp-wide requests
    wavefronts: int  # sum over requests of the most distinct 4-byte words that fall in one bank
    ideal_wavefronts: int  # sum over requests of ceil(distinct words / 32)
    max_degree: int  # worst request's conflict degree: ceil(wavefronts / ideal)

    @property
    def conflicts(self) -> int:
        """Extra wavefronts caused by bank conflicts (0 when conflict-free)."""
        return self.wavefronts - self.ideal_wavefronts


@dataclass(frozen=True)
class Race:
    """Two threads of a block touching one shared location between the same pair of barriers, one writing."""

    array: str
    index: tuple[int, ...]
    kind: str  # "RAW", "WAR" or "WAW", in the order the simulator happened to run them
    block: tuple[int, int, int]
    threads: tuple[tuple[int, int, int], tuple[int, int, int]]  # threadIdx of the first and second access
    interval: int  # barrier interval: number of syncthreads() the threads had passed
    accesses: tuple[str, str]  # what the first and the second thread did

    def describe(self) -> str:
        """One readable line."""
        index = ", ".join(map(str, self.index))
        (first, second), (did_first, did_second) = self.threads, (_VERBS[a] for a in self.accesses)
        return (
            f"{self.kind} on {self.array}[{index}] in block {self.block}: thread {first} {did_first}, "
            f"then thread {second} {did_second}, with no syncthreads() between (after barrier {self.interval})"
        )


@dataclass
class TraceReport:
    """Access-pattern metrics of one traced launch."""

    kernel: str
    griddim: tuple[int, int, int]
    blockdim: tuple[int, int, int]
    global_stats: list[GlobalStat] = field(default_factory=list)
    shared_stats: list[SharedStat] = field(default_factory=list)
    races: list[Race] = field(default_factory=list)

    def global_efficiency(
        self, array_name_or_index: str | int | None = None, kind: str | None = None
    ) -> float:
        """Ideal / touched sectors over the selected global requests (kind None: loads and stores)."""
        stats = self.global_stats
        if array_name_or_index is not None:
            known = {s.array for s in stats} | {s.position for s in stats}
            if array_name_or_index not in known:
                names = sorted({f"{s.array} (arg {s.position})" for s in stats})
                raise KeyError(f"no global accesses to {array_name_or_index!r}; traced arrays: {names}")
            stats = [s for s in stats if array_name_or_index in (s.array, s.position)]
        if kind is not None and kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS} or None, not {kind!r}")
        stats = [s for s in stats if s.kind == kind or (kind is None and s.kind != ATOMIC)]
        sectors = sum(s.sectors for s in stats)
        if not sectors:
            what = "global loads and stores" if kind is None else f"global {kind}s"
            where = "" if array_name_or_index is None else f" to {array_name_or_index!r}"
            raise ValueError(f"the kernel made no {what}{where}")
        return sum(s.ideal_sectors for s in stats) / sectors

    @property
    def bank_conflicts(self) -> int:
        """Extra shared-memory wavefronts caused by bank conflicts, over all shared requests."""
        return sum(s.conflicts for s in self.shared_stats)

    @property
    def max_bank_degree(self) -> int:
        """Worst conflict degree of any shared request (1 = conflict-free, 32 = fully serialised)."""
        return max((s.max_degree for s in self.shared_stats), default=1)

    def summary(self) -> str:
        """A readable table of the metrics."""
        blocks = int(np.prod(self.griddim))
        threads = int(np.prod(self.blockdim))
        lines = [
            f"{self.kernel}[grid {self.griddim}, block {self.blockdim}]: {blocks} blocks x {threads} threads"
        ]
        lines += ["", "Global memory (32-byte sectors; efficiency = ideal / touched, 1.00 = fully coalesced)"]
        if self.global_stats:
            rows = [("array", "kind", "requests", "sectors", "ideal", "efficiency")]
            for s in self.global_stats:
                label = s.array if s.position is None else f"{s.array} (arg {s.position})"
                rows.append((label, s.kind, s.requests, s.sectors, s.ideal_sectors, f"{s.efficiency:.2f}"))
            lines += _table(rows)
        else:
            lines.append("  no global accesses")
        lines += ["", "Shared memory (32 banks x 4 bytes; extra = wavefronts beyond the ideal)"]
        if self.shared_stats:
            rows = [("array", "kind", "requests", "wavefronts", "ideal", "extra", "worst way")]
            for s in self.shared_stats:
                row = (
                    s.array,
                    s.kind,
                    s.requests,
                    s.wavefronts,
                    s.ideal_wavefronts,
                    s.conflicts,
                    s.max_degree,
                )
                rows.append(row)
            lines += _table(rows)
        else:
            lines.append("  no shared accesses")
        lines.append("")
        if not self.races:
            lines.append("Shared-memory races: none")
        else:
            lines.append(f"Shared-memory races: {len(self.races)} racy locations, e.g.")
            lines += [f"  {race.describe()}" for race in self.races[:5]]
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""

        def stat(s: GlobalStat | SharedStat) -> dict[str, Any]:
            data = dict(s.__dict__)
            if isinstance(s, GlobalStat):
                data["efficiency"] = s.efficiency
            else:
                data["conflicts"] = s.conflicts
            return data

        try:
            overall: float | None = self.global_efficiency()
        except ValueError:
            overall = None
        return {
            "kernel": self.kernel,
            "griddim": list(self.griddim),
            "blockdim": list(self.blockdim),
            "global_efficiency": overall,
            "bank_conflicts": self.bank_conflicts,
            "max_bank_degree": self.max_bank_degree,
            "global": [stat(s) for s in self.global_stats],
            "shared": [stat(s) for s in self.shared_stats],
            "races": [
                {
                    **r.__dict__,
                    "index": list(r.index),
                    "block": list(r.block),
                    "threads": [list(t) for t in r.threads],
                    "accesses": list(r.accesses),
                }
                for r in self.races
            ],
        }

    def __str__(self) -> str:
        return self.summary()


def trace(kernel: Any, griddim: Any, blockdim: Any, *args: Any, sharedmem: int = 0) -> TraceReport:
    """Run ``kernel[griddim, blockdim](*args)`` in the CUDA simulator and report its memory-access pattern."""
    sim = _Simulator.of(kernel)
    names = _parameter_names(kernel)
    recorder = _Recorder(sim, names)
    saved = (kernel.grid_dim, kernel.block_dim, kernel.dynshared_size)
    try:
        with sim.patched(recorder):
            kernel[griddim, blockdim, 0, sharedmem](*args)
        grid, block = tuple(kernel.grid_dim), tuple(kernel.block_dim)
    finally:
        kernel.grid_dim, kernel.block_dim, kernel.dynshared_size = saved
    name = getattr(kernel.py_func, "__name__", "kernel")
    return recorder.report(name, grid, block)


# Recording


class _ArrayInfo:
    """Identity of one traced array: its name, memory space and layout (shared by all its views)."""

    __slots__ = ("name", "position", "space", "base", "shape", "strides", "itemsize", "order")

    def __init__(self, name: str, position: int | None, space: str, base: int, ary: np.ndarray, order: int):
        self.name, self.position, self.space, self.base = name, position, space, base
        self.shape, self.strides, self.itemsize = ary.shape, ary.strides, ary.itemsize
        self.order = order

    def index_of(self, address: int) -> tuple[int, ...]:
        """Element index of a byte address inside this array (best effort for unusual layouts)."""
        rel = address - self.base
        index = [0] * len(self.shape)
        for dim in sorted(range(len(self.shape)), key=lambda d: -abs(self.strides[d])):
            stride = self.strides[dim]
            if stride > 0:
                index[dim], rel = divmod(rel, stride)
        return tuple(index) if rel == 0 else (((address - self.base) // self.itemsize),)


class _Traced:
    """Stands in for a kernel's array: forwards every access to the real array and records element accesses."""

    __slots__ = ("_ary", "_info", "_base", "_shape", "_strides", "_rec", "_fake_shape")

    def __init__(self, ary: np.ndarray, info: _ArrayInfo, base: int, rec: _Recorder):
        self._ary, self._info, self._base, self._rec = ary, info, base, rec
        self._shape, self._strides = ary.shape, ary.strides
        self._fake_shape = rec.sim.fake_shape(ary.shape)

    def _offset(self, idx: Any) -> int | None:
        """Byte address of the element ``idx`` names, or None when ``idx`` is not one element."""
        try:
            if type(idx) is not tuple:
                idx = (idx,)
            if len(idx) != len(self._shape):
                return None
            address = self._base
            for i, n, stride in zip(idx, self._shape, self._strides, strict=True):
                i = operator.index(i)
                address += (i + n if i < 0 else i) * stride
            return address
        except TypeError:
            return None

    def _view(self, view: np.ndarray) -> _Traced:
        offset = view.__array_interface__["data"][0] - self._ary.__array_interface__["data"][0]
        return _Traced(view, self._info, self._base + offset, self._rec)

    def __getitem__(self, idx: Any) -> Any:
        value = self._ary[idx]
        if isinstance(value, np.ndarray):
            return self._view(value)
        address = self._offset(idx)
        if address is not None:
            _record(self._rec, self._info, address, LOAD, sys._getframe(1))
        return value

    def __setitem__(self, idx: Any, value: Any) -> None:
        self._ary[idx] = value
        address = self._offset(idx)
        if address is not None:
            _record(self._rec, self._info, address, STORE, sys._getframe(1))

    @property
    def shape(self) -> tuple[int, ...]:
        """The array's shape (no negative indexing, as in a kernel)."""
        return self._fake_shape

    @property
    def size(self) -> int:
        """Number of elements."""
        return self._ary.size

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return self._ary.ndim

    @property
    def dtype(self) -> np.dtype:
        """Element type."""
        return self._ary.dtype

    def __getattr__(self, name: str) -> Any:
        if name in _Traced.__slots__:  # not yet initialised (copying, pickling): no recursion
            raise AttributeError(name)
        value = getattr(self._ary, name)
        return self._view(value) if isinstance(value, np.ndarray) else value

    def __len__(self) -> int:
        return len(self._ary)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        return self._ary if dtype is None else self._ary.astype(dtype)

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        inputs = tuple(x._ary if isinstance(x, _Traced) else x for x in inputs)
        if "out" in kwargs:
            kwargs["out"] = tuple(x._ary if isinstance(x, _Traced) else x for x in kwargs["out"])
        return getattr(ufunc, method)(*inputs, **kwargs)

    def __repr__(self) -> str:
        return f"<traced {self._info.space} array {self._info.name}: {self._ary!r}>"


def _record(rec: _Recorder, info: _ArrayInfo, address: int, kind: str, frame: Any) -> None:
    """Append one access to the current simulated thread's own list (no lock needed)."""
    thread = threading.current_thread()
    records = getattr(thread, "_mt_records", None)
    if records is None:  # not a simulated thread of the traced launch
        return
    code, lasti = frame.f_code, frame.f_lasti
    key = rec.instructions.get((code, lasti))
    if key is None:
        key = rec.instructions[(code, lasti)] = (code, _instruction_start(code, lasti))
    counts = thread._mt_counts
    n = counts.get(key, 0)
    counts[key] = n + 1
    records.append((key, n, info, address, kind, thread._mt_epoch, next(rec.seq)))


_CACHE_OPCODE = dis.opmap.get("CACHE", -1)


def _instruction_start(code: Any, lasti: int) -> int:
    """The instruction a frame's ``f_lasti`` belongs to, skipping inline-cache entries.

    Specialised calls into a Python ``__getitem__`` report ``f_lasti`` past the subscript's inline cache,
    unspecialised ones at the subscript itself: both must name the same instruction.
    """
    raw = code.co_code
    while lasti > 0 and lasti < len(raw) and raw[lasti] == _CACHE_OPCODE:
        lasti -= 2
    return lasti


class _Recorder:
    """Collects the accesses of one traced launch and reduces them block by block."""

    def __init__(self, sim: _Simulator, names: list[str]):
        self.sim, self.names = sim, names
        self.seq = itertools.count()  # global order of accesses, only used to label race kinds
        self.instructions: dict[tuple[Any, int], tuple[Any, int]] = {}  # (code, f_lasti) -> instruction
        self.allocations: dict[int, tuple[int, np.ndarray]] = {}  # id(root buffer) -> (number, root)
        self.infos: list[_ArrayInfo] = []
        self.arg_proxies: dict[int, tuple[Any, _Traced | None]] = {}
        self.shared_proxies: dict[Any, _Traced] = {}
        self.block_threads: list[Any] = []
        self.global_acc: dict[tuple[_ArrayInfo, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        self.shared_acc: dict[tuple[_ArrayInfo, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        self.races: list[Race] = []

    def proxy(self, ary: np.ndarray, name: str, position: int | None, space: str) -> _Traced:
        """A recording proxy for ``ary``, addressed from the start of the buffer that owns its memory."""
        root = ary
        while True:  # the array that owns the memory (through views and frombuffer)
            base = root.base.obj if isinstance(root.base, memoryview) else root.base
            if not isinstance(base, np.ndarray):
                break
            root = base
        number, _ = self.allocations.setdefault(id(root), (len(self.allocations) + 1, root))
        offset = ary.__array_interface__["data"][0] - root.__array_interface__["data"][0]
        base = (number << _ALLOC_SHIFT) + offset
        info = _ArrayInfo(name, position, space, base, ary, len(self.infos))
        self.infos.append(info)
        return _Traced(ary, info, base, self)

    def wrap_args(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """Replace the simulator's array arguments by recording proxies (made once per launch)."""
        out = list(args)
        for i, arg in enumerate(args):
            if not isinstance(arg, self.sim.within_kernel_array):
                continue
            cached = self.arg_proxies.get(i)
            if cached is None or cached[0] is not arg:
                ary = arg._item._ary
                traceable = isinstance(ary, np.ndarray) and ary.dtype.fields is None and ary.ndim > 0
                name = self.names[i] if i < len(self.names) else f"arg{i}"
                cached = (arg, self.proxy(ary, name, i, "global") if traceable else None)
                self.arg_proxies[i] = cached
            if cached[1] is not None:
                out[i] = cached[1]
        return tuple(out)

    def shared(self, key: Any, ary: np.ndarray, where: tuple[str, int]) -> _Traced:
        """The recording proxy of one shared allocation, named after the variable it is assigned to."""
        proxy = self.shared_proxies.get(key)
        if proxy is None or proxy._ary is not ary:
            match = _SHARED_NAME.search(linecache.getline(*where))
            name = match.group(1) if match else f"shared@{os.path.basename(where[0])}:{where[1]}"
            if name in {info.name for info in self.infos}:
                name = f"{name}@{where[1]}"
            proxy = self.shared_proxies[key] = self.proxy(ary, name, None, "shared")
        return proxy

    def finish_block(self, block: tuple[int, ...]) -> None:
        """Reduce one block's accesses to requests, bank wavefronts and races, then drop them."""
        threads, self.block_threads = self.block_threads, []
        global_requests: dict[tuple, list[int]] = defaultdict(list)
        shared_requests: dict[tuple, list[int]] = defaultdict(list)
        locations: dict[tuple, list[tuple]] = defaultdict(list)
        thread_index = {}
        for thread in threads:
            tid = thread.thread_id
            warp = tid // WARP_SIZE
            thread_index[tid] = tuple(int(v) for v in thread.threadIdx)
            for key, n, info, address, kind, epoch, seq in thread._mt_records:
                if info.space == "global":
                    global_requests[(warp, key, n, info, kind)].append(address)
                else:
                    if kind != ATOMIC:
                        shared_requests[(warp, key, n, info, kind)].append(address)
                    locations[(epoch, address)].append((seq, kind, tid, info))
            thread._mt_records = []
        for (_, _, _, info, kind), addresses in global_requests.items():
            size = info.itemsize
            distinct = set(addresses)
            sectors: set[int] = set()
            for a in distinct:
                first, last = a // SECTOR_BYTES, (a + size - 1) // SECTOR_BYTES
                sectors.update(range(first, last + 1)) if last > first else sectors.add(first)
            requested = len(distinct) * size
            acc = self.global_acc[(info, kind)]
            acc[0] += 1
            acc[1] += len(sectors)
            acc[2] += -(-requested // SECTOR_BYTES)
            acc[3] += requested
        for (_, _, _, info, kind), addresses in shared_requests.items():
            size = info.itemsize
            words: set[int] = set()
            for a in set(addresses):
                first, last = a // BANK_BYTES, (a + size - 1) // BANK_BYTES
                words.update(range(first, last + 1)) if last > first else words.add(first)
            wavefronts = max(Counter(w % BANKS for w in words).values())
            ideal = -(-len(words) // BANKS)
            acc = self.shared_acc[(info, kind)]
            acc[0] += 1
            acc[1] += wavefronts
            acc[2] += ideal
            acc[3] = max(acc[3], -(-wavefronts // ideal))
        for (epoch, address), accesses in locations.items():
            if len(accesses) > 1:
                self._check_race(block, epoch, address, accesses, thread_index)

    def _check_race(self, block: tuple, epoch: int, address: int, accesses: list, thread_index: dict) -> None:
        """Record the first conflicting pair of accesses by different threads to one location, if any."""
        if all(kind == LOAD for _, kind, _, _ in accesses) or all(
            kind == ATOMIC for _, kind, _, _ in accesses
        ):
            return
        accesses.sort(key=operator.itemgetter(0))
        seen: dict[str, list[int]] = {LOAD: [], STORE: [], ATOMIC: []}  # up to two distinct threads per kind
        for _, kind, tid, info in accesses:
            for earlier in _CONFLICTS[kind]:
                other = next((t for t in seen[earlier] if t != tid), None)
                if other is not None:
                    self.races.append(
                        Race(
                            array=info.name,
                            index=info.index_of(address),
                            kind=_HAZARD.get((earlier, kind), "WAW"),
                            block=tuple(int(b) for b in block) + (0,) * (3 - len(block)),
                            threads=(thread_index[other], thread_index[tid]),
                            interval=epoch,
                            accesses=(earlier, kind),
                        )
                    )
                    return
            threads = seen[kind]
            if tid not in threads and len(threads) < 2:
                threads.append(tid)

    def report(self, kernel: str, griddim: tuple, blockdim: tuple) -> TraceReport:
        """The finished report, rows in order of first appearance (arguments by position)."""

        def order(item: tuple) -> tuple:
            (info, kind), _ = item
            position = info.position if info.position is not None else len(self.names) + info.order
            return (position, KINDS.index(kind))

        global_stats = [
            GlobalStat(info.name, info.position, kind, *acc)
            for (info, kind), acc in sorted(self.global_acc.items(), key=order)
        ]
        shared_stats = [
            SharedStat(info.name, kind, *acc)
            for (info, kind), acc in sorted(self.shared_acc.items(), key=order)
        ]
        return TraceReport(kernel, griddim, blockdim, global_stats, shared_stats, self.races)


# The simulator's hooks


class _Simulator:
    """The simulator modules a kernel belongs to, and the patches that trace a launch."""

    _cache: dict[str, _Simulator] = {}

    def __init__(self, kernel_module: Any):
        package = kernel_module.__name__.rsplit(".", 1)[0]
        self.kernel_module = kernel_module
        self.kernelapi = sys.modules[package + ".kernelapi"]
        self.within_kernel_array = kernel_module.FakeWithinKernelCUDAArray
        self.fake_shape: Callable[[tuple], tuple] = sys.modules[package + ".cudadrv.devicearray"].FakeShape
        self.active: _Recorder | None = None

    @classmethod
    def of(cls, kernel: Any) -> _Simulator:
        """The simulator that runs ``kernel``; RuntimeError when numba is not simulating CUDA."""
        hint = (
            "memtrace needs Numba's CUDA simulator: call sparkcourse.gpu.setup_numba(force_simulator=True) "
            "before numba is imported (restart the kernel, run the set-up cell first)"
        )
        config = getattr(sys.modules.get("numba.core.config"), "ENABLE_CUDASIM", 0)
        module_name = type(kernel).__module__
        if not config or not module_name.endswith("simulator.kernel") or module_name not in sys.modules:
            raise RuntimeError(hint)
        if getattr(kernel, "_device", False):
            raise TypeError("trace() needs a kernel, not a device function (device=True)")
        if module_name not in cls._cache:
            cls._cache[module_name] = cls(sys.modules[module_name])
        return cls._cache[module_name]

    @contextmanager
    def patched(self, recorder: _Recorder) -> Iterator[None]:
        """Install the recording hooks for one launch, and remove them afterwards."""
        if self.active is not None:
            raise RuntimeError("memtrace.trace() cannot be nested")
        thread_cls = self.kernel_module.BlockThread
        manager_cls = self.kernel_module.BlockManager
        shared_cls = self.kernelapi.FakeCUDAShared
        atomic_cls = self.kernelapi.FakeCUDAAtomic
        originals = [
            (thread_cls, "__init__", thread_cls.__init__),
            (thread_cls, "syncthreads", thread_cls.syncthreads),
            (manager_cls, "run", manager_cls.run),
            (shared_cls, "array", shared_cls.array),
        ] + [(atomic_cls, name, getattr(atomic_cls, name)) for name in _ATOMICS + ("compare_and_swap",)]
        thread_init, thread_sync, manager_run = (original for _, _, original in originals[:3])
        replacements = [
            *_launch_hooks(recorder, thread_init, thread_sync, manager_run),
            _shared_array_hook(recorder),
            *(_atomic_hook(recorder, name, original) for _, name, original in originals[4:]),
        ]
        self.active = recorder
        try:
            for (owner, name, _), replacement in zip(originals, replacements, strict=True):
                setattr(owner, name, replacement)
            yield
        finally:
            for owner, name, original in originals:
                setattr(owner, name, original)
            self.active = None


def _launch_hooks(recorder: _Recorder, thread_init: Callable, thread_sync: Callable,
                  manager_run: Callable) -> list[Callable]:
    """Replacements of ``BlockThread.__init__``, ``BlockThread.syncthreads`` and ``BlockManager.run``: give each
    simulated thread its record lists and barrier epoch, wrap the kernel's arguments, collect each block."""

    def init(thread: Any, *args: Any, **kwargs: Any) -> None:
        thread_init(thread, *args, **kwargs)
        thread._mt_epoch, thread._mt_counts, thread._mt_records = 0, {}, []
        recorder.block_threads.append(thread)  # threads are made one by one by the launching thread

    def syncthreads(thread: Any) -> None:
        thread_sync(thread)
        thread._mt_epoch += 1

    def run(manager: Any, grid_point: tuple, *args: Any) -> None:
        recorder.block_threads = []
        manager_run(manager, grid_point, *recorder.wrap_args(args))
        recorder.finish_block(grid_point)

    return [init, syncthreads, run]


def _shared_array_hook(recorder: _Recorder) -> Callable:
    """Replacement of ``FakeCUDAShared.array``: the simulator's own allocation, handed out as a traced proxy."""
    allocation_lock = threading.Lock()

    def shared_array(shared: Any, shape: Any, dtype: Any) -> _Traced:
        dtype = _as_dtype(dtype)
        frame = sys._getframe(1)
        where = (frame.f_code.co_filename, frame.f_lineno)  # the simulator's own key: one array per line
        with allocation_lock:
            if shape == 0:  # dynamic shared memory: every such array views the one launch-sized buffer
                key: Any = ("dynamic", where, dtype.str)
                proxy = recorder.shared_proxies.get(key)
                if proxy is not None:
                    return proxy
                count = shared._dynshared_size // dtype.itemsize
                ary = np.frombuffer(shared._dynshared.data, dtype=dtype, count=count)
            else:
                key = where
                ary = shared._allocations.get(key)
                if ary is None:
                    ary = shared._allocations[key] = np.empty(shape, dtype)
            return recorder.shared(key, ary, where)

    return shared_array


def _atomic_hook(recorder: _Recorder, name: str, original: Callable) -> Callable:
    """Replacement of the atomic ``name``: the simulator's operation, recorded when it hits a traced array."""

    def wrapper(api: Any, array: Any, *rest: Any) -> Any:
        if not isinstance(array, _Traced):
            return original(api, array, *rest)
        index = (0,) * array.ndim if name == "compare_and_swap" else rest[0]
        address = array._offset(index)
        result = original(api, array._ary, *rest)
        if address is not None:
            _record(recorder, array._info, address, ATOMIC, sys._getframe(1))
        return result

    return wrapper


def _as_dtype(dtype: Any) -> np.dtype:
    """A numpy dtype from a numba type or anything numpy accepts."""
    from numba.core import types
    from numba.np import numpy_support

    return numpy_support.as_dtype(dtype) if isinstance(dtype, types.Type) else np.dtype(dtype)


def _parameter_names(kernel: Any) -> list[str]:
    """The kernel's positional parameter names, for labelling arguments."""
    try:
        parameters = inspect.signature(kernel.py_func).parameters.values()
    except (TypeError, ValueError, AttributeError):
        return []
    return [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def _table(rows: list[tuple]) -> list[str]:
    """Rows as aligned text: first column left-aligned, the rest right-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    return [
        "  "
        + "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in cells
    ]
