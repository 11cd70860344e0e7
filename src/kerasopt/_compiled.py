"""The compiled engine ("graph mode"): the same update rule under ``torch.compile``.

The rule runs over 1-D views of the variables, gradients and slots in chunks of exactly ``CHUNK``
tensors (the last chunk is padded with two-element scratch tensors that nothing reads). Shapes are
dynamic and traced without duck sizing, so **one** compiled graph per (rule, dtype, slot count,
device) serves every chunk whatever the tensor sizes; optimizers of the same class share it, and
coefficients are 0-d tensor inputs, so changing a hyperparameter or stepping a schedule never
recompiles. Compile cost is therefore bounded by the number of rules and dtypes in use, not by
the number of tensors.

Tensors with fewer than two elements (size 1 would specialise the dynamic shapes) and
non-contiguous variables run through the foreach engine instead: bit-identical to the per-tensor
rule, while compiled results are within a few ulp of it.

Only a failure to *compile* (a dynamo or inductor compile error, or any error on a key's first
call) falls back to the foreach engine, for that key, for the rest of the process; an error on a
later call of a compiled key is the rule's or the data's and propagates. The caches are shared by
threads and guarded by one lock.
"""

from __future__ import annotations

import operator
import threading
import types
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch._dynamo.exc as dynamo_exc
import torch._dynamo.utils as dynamo_utils
import torch._inductor.exc as inductor_exc
from torch import Tensor
from torch.compiler import is_compiling
from torch.fx.experimental import _config as fx_config

from ._copies import release
from ._tensorlist import TensorList

CHUNK = 16
#: vectors of a whole-tensor rule per compiled call (its graph compiles the rule this many times)
VECTOR_CHUNK = 8

_LOCK = threading.Lock()  # guards the mutation of the four caches below
_CACHE: dict[tuple[Any, ...], Callable[..., None]] = {}
# key -> the compiled function whose call has succeeded once (a first call may fail to compile).
_READY: dict[tuple[Any, ...], Callable[..., None]] = {}
_BROKEN: set[tuple[Any, ...]] = set()  # keys that failed to compile: they run foreach
_SCRATCH: dict[tuple[Any, ...], list[Tensor]] = {}  # (dtype, device) -> pads, sliced per use

# Errors that mean "this could not be compiled" (no C++ compiler, a lowering or codegen failure,
# something dynamo cannot trace). Anything else on a later call is a runtime error.
_COMPILE_ERRORS: tuple[type[BaseException], ...] = (
    dynamo_exc.BackendCompilerFailed,  # includes inductor's InductorError
    dynamo_exc.InternalTorchDynamoError,
    dynamo_exc.Unsupported,
    dynamo_exc.ShortenTraceback,  # TritonMissing, GPUTooOldForTriton
    dynamo_exc.RecompileError,
    dynamo_exc.FailOnRecompileLimitHit,  # (a shape class past ``_RECOMPILES``' budget)
    inductor_exc.OperatorIssue,
    inductor_exc.InvalidCxxCompiler,
    inductor_exc.CppCompileError,
    inductor_exc.CppWrapperCodegenError,
    inductor_exc.SubgraphLoweringException,
)

# Traced without duck sizing: equal sizes in a chunk must not become guards (each later chunk
# with other equalities would recompile). One patch object, made once: each ``fx_config.patch()``
# call creates a new ContextVar that stays in the calling context for good, so patching anew
# every step grew memory without bound. The option is read when dynamo traces, which happens on
# a key's first call and on any recompile, so it is in effect around every compiled call;
# re-entering this one object only re-sets its one ContextVar.
_NO_DUCK_SHAPE = fx_config.patch(use_duck_shape=False)  # type: ignore[attr-defined]

# Each key's code object may compile this many graphs (dynamo's default is 8). A whole-tensor
# rule compiles one per shape class (rank, dimensions of size 1, the rule's own branches on
# sizes), and a model of convolutions, matrices and embeddings has more than 8: at the ninth,
# dynamo raised out of the step. Set only around kerasopt's own calls (one patch object, as
# above); a key that still runs out falls back to the eager rule like any compile failure.
_RECOMPILES = torch._dynamo.config.patch(recompile_limit=64)


# dynamic_threads: every loop gets a parallel scope. Without it inductor decides from the first
# trace's sizes, and a shared graph would run a later large tensor on one thread.
# size_asserts off: the generated wrapper re-checks every input's sizes and strides against the
# graph's symbolic ones in Python (0.9 us an input, about half of a 16-tensor chunk's call
# overhead), after dynamo's guards have checked the same. The guards stay.
_INDUCTOR_OPTIONS: dict[str, Any] = {"cpp.dynamic_threads": True, "size_asserts": False}


def _chunk_step(rule: Callable[..., None], variables: Any, grads: Any, slots: Any, c: Any) -> None:
    for i in range(len(variables)):
        rule(variables[i], grads[i], c=c, **{name: s[i] for name, s in slots.items()})


def _one_step(rule: Callable[..., None], var: Any, grad: Any, slots: Any, c: Any) -> None:
    rule(var, grad, c=c, **slots)


def _compiled(key: tuple[Any, ...], step: Callable[..., None] = _chunk_step) -> Callable[..., None]:
    fn = _CACHE.get(key)
    if fn is None:
        with _LOCK:
            fn = _CACHE.get(key)
            if fn is None:
                # A distinct code object per key gives each its own dynamo cache (and recompile
                # budget).
                code = step.__code__.replace(co_name=f"kerasopt_compiled_step_{len(_CACHE)}")
                raw = types.FunctionType(code, step.__globals__, code.co_name)
                fn = torch.compile(raw, dynamic=True, fullgraph=True, options=_INDUCTOR_OPTIONS)
                _CACHE[key] = fn
    return fn


def _flat(t: Tensor) -> Tensor:
    """A 1-D alias of a contiguous tensor's storage that is not a view.

    Views carry ``_base`` (and a parameter's ``requires_grad``), which dynamo guards on; the
    scratch pads have neither, so every input is made the same plain kind of tensor.
    """
    out = torch.empty(0, dtype=t.dtype, device=t.device)
    return out.set_(t.untyped_storage(), t.storage_offset(), (t.numel(),), (1,))


def _scratch(dtype: torch.dtype, device: torch.device, count: int) -> list[Tensor]:
    """``count`` distinct two-element pads: one list per (dtype, device), grown to the largest
    count asked for (at most ``(2 + slots) * (CHUNK - 1)``) and sliced."""
    key = (dtype, device)
    pads = _SCRATCH.get(key)
    if pads is None or len(pads) < count:
        with _LOCK:
            pads = _SCRATCH.get(key, [])
            if len(pads) < count:
                pads = pads + [
                    torch.zeros(2, dtype=dtype, device=device) for _ in range(count - len(pads))
                ]
                _SCRATCH[key] = pads
    return pads[:count]


@dataclass(eq=False)
class Aliases:
    """Which of a group's tensors run compiled (``flat``: contiguous, two elements or more; the
    rest run eagerly) and their variables' and slots' 1-D aliases (``_flat``), in ``flat``'s
    order. Kept in the group's cache while every variable and slot is where it was, with the
    same contiguity: only the gradients, new each step, are aliased anew. (The aliases hold
    their storages: a variable given new storage frees its old one at the group's next step.)"""

    pointers: list[list[int]]
    contiguous: list[bool]
    flat: list[int]
    eager: list[int]
    variables: list[Tensor]
    slots: dict[str, list[Tensor]]


def _aliases(
    variables: Sequence[Tensor],
    slots: Mapping[str, Sequence[Tensor]],
    cache: dict[str, Any] | None,
) -> Aliases:
    pointers = [list(map(Tensor.data_ptr, variables))]
    pointers += [list(map(Tensor.data_ptr, lst)) for lst in slots.values()]
    contiguous = list(map(Tensor.is_contiguous, variables))
    for lst in slots.values():
        contiguous = list(map(operator.and_, contiguous, map(Tensor.is_contiguous, lst)))
    kept: Aliases | None = None if cache is None else cache.get("aliases")
    if kept is not None and kept.pointers == pointers and kept.contiguous == contiguous:
        return kept
    flat: list[int] = []
    eager: list[int] = []
    for i, (var, ok) in enumerate(zip(variables, contiguous)):
        (flat if ok and var.numel() >= 2 else eager).append(i)
    made = Aliases(
        pointers,
        contiguous,
        flat,
        eager,
        [_flat(variables[i]) for i in flat],
        {name: [_flat(lst[i]) for i in flat] for name, lst in slots.items()},
    )
    if cache is not None:
        cache["aliases"] = made
    return made


def _run_chunks(
    fn: Callable[..., None],
    key: tuple[Any, ...],
    rule: Callable[..., None],
    aliases: Aliases,
    grads: Sequence[Tensor],
    c: Any,
    chunk: int = CHUNK,
) -> int:
    """Runs the chunks of ``aliases.flat`` compiled; returns how many of them ran (the rest run
    eagerly after a compile failure)."""
    flat, var0, slots = aliases.flat, aliases.variables[0], aliases.slots
    for start in range(0, len(flat), chunk):
        idx = flat[start : start + chunk]
        pad = chunk - len(idx)
        scratch = _scratch(var0.dtype, var0.device, (2 + len(slots)) * pad) if pad else []
        v = aliases.variables[start : start + chunk] + scratch[:pad]
        g = [_flat(grads[i].contiguous()) for i in idx] + scratch[pad : 2 * pad]
        s = {
            name: lst[start : start + chunk] + scratch[(2 + k) * pad : (3 + k) * pad]
            for k, (name, lst) in enumerate(slots.items())
        }
        if not _call(fn, key, rule, v, g, s, c):
            return start
    return len(flat)


def _distinct(c: Any) -> Any:
    """``c`` with no two coefficients the same tensor object. Equal constants are one cached
    tensor (Adafactor's default ``clip_threshold`` is its ``one``), and dynamo guards on inputs
    that alias: changing such a hyperparameter recompiled. A repeated tensor is cloned."""
    seen: set[int] = set()
    repeated: dict[str, Tensor] = {}
    for name, value in getattr(c, "__dict__", {}).items():
        if isinstance(value, Tensor):
            if id(value) in seen:
                repeated[name] = value.clone()
            seen.add(id(value))
    return c.replace(**repeated) if repeated else c


def _call(fn: Callable[..., None], key: tuple[Any, ...], *args: Any) -> bool:
    """Calls the compiled ``fn``; False when it could not be compiled (``key`` is then marked
    broken, with a warning, and nothing ran: the caller runs the rule eagerly). An error of a
    graph that has compiled before is the rule's or the data's, and propagates. (The last
    argument is the coefficients, made ``_distinct``.)"""
    first = _READY.get(key) is not fn
    args = (*args[:-1], _distinct(args[-1]))
    # dynamo's count of the graphs it has compiled (read each time: a user may clear its
    # statistics): a call that moved it compiled one, and hands back what compiling freed
    graphs = dynamo_utils.counters["stats"]["unique_graphs"]
    try:
        fn(*args)
    except Exception as e:
        if not first and not isinstance(e, _COMPILE_ERRORS):
            raise  # a runtime error of a graph that compiled: the caller's to see
        # Compilation failed (e.g. no C++ compiler): run eagerly from now on.
        with _LOCK:
            _BROKEN.add(key)
        warnings.warn(
            f"kerasopt: the compiled engine is unavailable here ({type(e).__name__}: {e}); "
            "running the rule eagerly.",
            RuntimeWarning,
            stacklevel=6,
        )
        return False
    if first:
        with _LOCK:
            _READY[key] = fn
    if dynamo_utils.counters["stats"]["unique_graphs"] != graphs and not is_compiling():
        release()  # (100-200 MB that compiling allocated and freed, else kept resident)
    return True


def _key(rule: Callable[..., None], var: Tensor, slots: Mapping[str, Any], kind: Any) -> Any:
    """A graph's key: the rule's function and optimizer class (one graph per class, shared by
    instances), its slots, the dtype, the device type and ``kind`` (chunk length, "whole")."""
    owner = type(getattr(rule, "__self__", None))
    return (getattr(rule, "__func__", rule), owner, tuple(slots), var.dtype, var.device.type, kind)


def run_compiled(
    rule: Callable[..., None],
    variables: Sequence[Tensor],
    grads: Sequence[Tensor],
    slots: Mapping[str, Sequence[Tensor]],
    c: Any,
    cache: dict[str, Any] | None = None,
    chunk: int = CHUNK,
) -> None:
    """Runs ``rule`` compiled over ``variables`` in chunks of ``chunk`` tensors (one graph per
    chunk length: the flat engine's one-tensor graph compiles in a fraction of the time)."""
    aliases = _aliases(variables, slots, cache)
    eager, flat = list(aliases.eager), aliases.flat
    if flat:
        key = _key(rule, variables[flat[0]], slots, chunk)
        if key in _BROKEN:
            eager.extend(flat)
            flat = []
        if flat:
            fn = _compiled(key)
            with _NO_DUCK_SHAPE, _RECOMPILES:
                done = _run_chunks(fn, key, rule, aliases, grads, c, chunk)
            eager.extend(flat[done:])
    if eager:
        rule(
            TensorList([variables[i] for i in eager]),
            TensorList([grads[i] for i in eager]),
            c=c,
            **{name: TensorList([lst[i] for i in eager]) for name, lst in slots.items()},
        )


def _alias(t: Tensor) -> Tensor:
    """A plain tensor on ``t``'s memory with its shape and strides (not a view: see ``_flat``)."""
    out = torch.empty(0, dtype=t.dtype, device=t.device)
    return out.set_(t.untyped_storage(), t.storage_offset(), t.shape, t.stride())


def run_whole_compiled(
    rule: Callable[..., None],
    variables: Sequence[Tensor],
    grads: Sequence[Tensor],
    slots: Mapping[str, Sequence[Tensor]],
    c: Any,
    cache: dict[str, Any] | None = None,
) -> None:
    """A whole-tensor rule (norms, factored moments) compiled one tensor per call, its vectors
    ``VECTOR_CHUNK`` a call (``_run_vectors``): a graph per (rule, dtype) and shape class (rank,
    and the rule's own branches on sizes), shared by instances; coefficients are 0-d tensors,
    so hyperparameter changes never recompile. Its
    reductions may sum in another order than eager: within a few ulp of the per-tensor rule.
    Tensors with fewer than two elements run eagerly (size 1 would specialise the graph)."""
    if not variables:
        return
    done = _run_vectors(rule, variables, grads, slots, c, cache)
    key = _key(rule, variables[0], slots, "whole")
    fn = None if key in _BROKEN else _compiled(key, _one_step)
    with _NO_DUCK_SHAPE, _RECOMPILES:  # (read only when dynamo traces: harmless around eager)
        for i, var in enumerate(variables):
            if i in done:
                continue
            own = {name: lst[i] for name, lst in slots.items()}
            if fn is not None and var.numel() >= 2:
                aliases = {n: _alias(t) for n, t in own.items()}
                if _call(fn, key, rule, _alias(var), _alias(grads[i]), aliases, c):
                    continue
                fn = None
            rule(var, grads[i], c=c, **own)


def _run_vectors(
    rule: Callable[..., None],
    variables: Sequence[Tensor],
    grads: Sequence[Tensor],
    slots: Mapping[str, Sequence[Tensor]],
    c: Any,
    cache: dict[str, Any] | None,
) -> set[int]:
    """A whole-tensor rule's vectors (rank 1, two elements or more, contiguous, slots of their
    shape) ``VECTOR_CHUNK`` to a compiled call, as ``run_compiled`` runs an elementwise rule: a
    vector's 1-D alias is the vector itself, so the chunk's graph makes each tensor's own
    reductions. One call per tensor cost ~0.1 ms of overhead, more than a bias's whole update.
    Returns the indices it updated (none when the graph could not be compiled)."""
    picked = [
        i
        for i, var in enumerate(variables)
        if var.dim() == 1
        and var.numel() >= 2
        and all(lst[i].shape == var.shape for lst in slots.values())
    ]
    if len(picked) < 2:
        return set()
    sub_vars = [variables[i] for i in picked]
    sub_slots = {name: [lst[i] for i in picked] for name, lst in slots.items()}
    kept = None if cache is None else cache.setdefault("vectors", {})
    aliases = _aliases(sub_vars, sub_slots, kept)
    key = _key(rule, sub_vars[0], slots, ("vectors", VECTOR_CHUNK))
    if not aliases.flat or key in _BROKEN:
        return set()
    with _NO_DUCK_SHAPE, _RECOMPILES:
        grads_ = [grads[i] for i in picked]
        ran = _run_chunks(_compiled(key), key, rule, aliases, grads_, c, VECTOR_CHUNK)
    return {picked[j] for j in aliases.flat[:ran]}
