"""Engines: the ways one update rule is run over a group of variables.

Every engine calls the optimizer's single ``update(var, grad, <slot>=..., c=...)`` rule, its slots
passed by name (``Slots``: slot name -> one tensor per variable of the group):

- ``per_tensor``: a plain loop, one call per variable with ordinary tensors;
- ``foreach``: one call per group with ``TensorList`` arguments, so each operation of the rule is
  one ``torch._foreach_*`` call over the group;
- ``compiled``: the rule under ``torch.compile`` over 1-D aliases in fixed-length chunks
  (see ``_compiled.py``); Keras's ``jit_compile=True`` selects it;
- ``packed`` (what ``auto`` and ``compiled`` run for many small tensors): the compiled rule on the
  group packed into one flat tensor per operand, the variables copied back;
- ``flat`` (``implementation="flat"``): flat *storage*. The group's variables and slots become
  views into one buffer per (operand, device, dtype), so a step is one compiled call over the
  group whatever the number of tensors, and nothing is copied but the gradients (none where they
  are already views of the group's gradient buffer, as ``kerasopt.optim`` keeps ``.grad``).

Per-tensor and foreach perform the same IEEE operations in the same order, so their results are
bit-identical (the tests hold them to it); compiled results are within a few ulp (the compiler
may fuse operations). Rules that need the whole tensor (``elementwise = False``) run per tensor.

Around the engines, this module also owns how a step's dense pairs become groups (``groups``:
one per device, dtype, slot layout, weight decay and DTensor-ness, cached per composition in
the optimizer's ``SlotStore``) and how one group runs (``run_group``): engine selection, local
shards of DTensors (or the whole tensor, gathered, for a whole-tensor rule), and float32
compute for float16/bfloat16 variables (``compute_dtype``).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from . import _distributed
from ._compiled import run_compiled, run_whole_compiled
from ._copies import copy_all, rehome, release
from ._features import ENGINES as ENGINES  # the implementation keyword's values
from ._gradients import COMPLEX_DTYPES
from ._tensorlist import PooledList, Scratch, TensorList, pooled

if TYPE_CHECKING:
    from ._slots import Record, SlotStore


Rule = Callable[..., Any]
#: a group's slots by name, each one tensor per variable (in the group's order)
Slots = Mapping[str, Sequence[Tensor]]


def run_per_tensor(
    rule: Rule,
    variables: Sequence[Tensor],
    grads: Sequence[Tensor],
    slots: Slots,
    c: Any,
    cache: dict[str, Any] | None = None,
) -> None:
    for i, (var, grad) in enumerate(zip(variables, grads)):
        rule(var, grad, c=c, **{name: s[i] for name, s in slots.items()})


def run_foreach(
    rule: Rule,
    variables: Sequence[Tensor],
    grads: Sequence[Tensor],
    slots: Slots,
    c: Any,
    cache: dict[str, Any] | None = None,
) -> None:
    # The variables' and slots' lists are the group's for as long as its composition lasts
    # (`cache`); only the gradients are new each step.
    # A group of up to SCRATCH_MAX_NUMEL elements keeps its temporaries' buffers between steps
    # (`Scratch`, at most as many lists as the rule holds at once: two for Adam).
    lists = None if cache is None else cache.get("foreach")
    if lists is None or lists[0] is not variables:
        scratch = None
        if cache is not None and sum(v.numel() for v in variables) <= SCRATCH_MAX_NUMEL:
            scratch = Scratch()
        lists = (
            variables,
            _as_list(variables, scratch),
            {n: _as_list(s, scratch) for n, s in slots.items()},
            scratch,
        )
        if cache is not None:
            cache["foreach"] = lists
    if lists[3] is None:
        rule(lists[1], TensorList(grads), c=c, **lists[2])
    else:
        grad_list = PooledList(grads)  # (`pooled` inlined: the hot path counts its calls)
        grad_list.scratch = lists[3]
        rule(lists[1], grad_list, c=c, **lists[2])


def _as_list(tensors: Sequence[Tensor], scratch: Scratch | None) -> TensorList:
    return TensorList(tensors) if scratch is None else pooled(tensors, scratch)


#: the largest group (in elements) whose foreach temporaries keep their buffers between steps:
#: up to 16 MB per float32 list, beyond which `auto` compiles the group anyway.
SCRATCH_MAX_NUMEL = 1 << 22


# `auto` compiles a group once it holds this many elements: benchmarks/bench_step.py shows the
# compiled engine at torch's fused speed there (several times faster than foreach), and a one-off
# compile of a few seconds is then repaid within tens of steps. Smaller groups run foreach.
AUTO_COMPILE_NUMEL = 1 << 22


# Many small tensors: per-tensor work (kernel launches, guards) dominates, so the group is packed
# into one flat tensor per operand, updated by one compiled call, and copied back. The copies cost
# bandwidth (and transient memory) that small tensors can afford; large ones cannot.
FLAT_MIN_TENSORS = 64
FLAT_MAX_MEAN_NUMEL = 1 << 16


def run_packed(
    rule: Rule,
    variables: Sequence[Tensor],
    grads: Sequence[Tensor],
    slots: Slots,
    c: Any,
    cache: dict[str, Any],
) -> None:
    """Runs the rule once (compiled) on the group packed into flat tensors.

    The group's slots are re-homed once into one flat buffer per slot name (``rehome`` keeps
    each slot's identity; it becomes a window of the buffer), so they need no copies. Variables
    and gradients are packed into persistent buffers each step and the variables copied back.
    ``cache`` belongs to the group and lives as long as its composition does.
    """
    if "flat" not in cache:
        cache["flat"] = all(v.is_contiguous() for v in variables) and all(
            t.is_contiguous() for lst in slots.values() for t in lst
        )
        if cache["flat"]:
            sizes = [v.numel() for v in variables]
            with torch.inference_mode(False), torch.no_grad():  # (as `_layout`'s)
                flat_slots = {name: [rehome(lst, sizes)] for name, lst in slots.items()}
            var_buf = (
                torch.empty_like(next(iter(flat_slots.values()))[0])
                if flat_slots
                else torch.cat([v.detach().reshape(-1) for v in variables])
            )
            grad_buf = torch.empty_like(var_buf)
            cache.update(
                sizes=sizes,
                views=[v.detach().view(-1) for v in variables],
                slots=flat_slots,
                var_buf=var_buf,
                var_parts=list(var_buf.split(sizes)),
                grad_buf=grad_buf,
                # (shaped as the gradients: a copy does not reshape)
                grad_parts=[g.view(v.shape) for g, v in zip(grad_buf.split(sizes), variables)],
            )
    if not cache["flat"]:
        run_compiled(rule, variables, grads, slots, c)
        return
    ptrs = list(map(Tensor.data_ptr, variables))
    if ptrs != cache.setdefault("ptrs", ptrs):
        # A variable got new storage (e.g. `param.data = ...`): the cached views are stale.
        cache["views"] = [v.detach().view(-1) for v in variables]
        cache["ptrs"] = ptrs
    var_buf, grad_buf = cache["var_buf"], cache["grad_buf"]
    copy_all(cache["var_parts"], cache["views"])
    copy_all(cache["grad_parts"], grads)
    run_compiled(rule, [var_buf], [grad_buf], cache["slots"], c, cache)
    copy_all(cache["views"], cache["var_parts"])


#: True (``GRAD_VIEWS.set(True)``) around a step: the flat engine makes each variable's
#: ``.grad`` (when it is the gradient being applied) a view of the group's gradient buffer, so
#: that the next backward accumulates into the buffer and the step after copies nothing
#: (kerasopt.optim sets it).
GRAD_VIEWS: contextvars.ContextVar[bool] = contextvars.ContextVar("grad_views", default=False)


def _use_count(storage: torch.UntypedStorage) -> int | None:
    count = getattr(torch._C, "_storage_Use_Count", None)
    return None if count is None else int(count(storage._cdata))


def movable(variables: Sequence[Tensor]) -> bool:
    """Whether moving ``variables`` into a new buffer changes nothing anyone can see but their
    addresses: each is contiguous, and every storage they live on is seen by them alone (no
    view of one of them, no NumPy array over it or under it, no larger tensor they are windows
    of, no earlier buffer still held): such a tensor would silently stop following its
    variable."""
    storages: dict[int, list[Any]] = {}
    for var in variables:
        if not var.is_contiguous():
            return False
        storage = var.untyped_storage()
        if not storage.resizable():
            return False  # memory torch did not allocate (`torch.from_numpy`, DLPack): shared
        entry = storages.get(storage.data_ptr())
        if entry is None:
            storages[storage.data_ptr()] = [storage, 1]
        else:
            entry[1] += 1
    del storage  # (each kept storage object holds one reference: counted below)
    for kept, count in storages.values():
        uses = _use_count(kept)
        if uses is None or uses > count + 1:
            return False
    return True


@dataclass(eq=False)
class FlatLayout:
    """One group's flat storage: its variables and slots are views into ``variables`` and
    ``slots``; ``grads`` is the gradient buffer, ``grad_views`` its per-variable views. The
    pointers say where the layout put each tensor: a step that finds one elsewhere (``param.data
    = t``, another group's layout) lays the group out again from the current values."""

    variables: Tensor
    pointers: list[int]
    slots: dict[str, list[Tensor]]
    slot_pointers: list[list[int]]
    grads: Tensor
    grad_views: list[Tensor]
    grad_pointers: list[int]
    assign_views: bool = True  # give `.grad` the views (off once a step finds them dropped)
    assigned: bool = False
    released: bool = False  # the gradients the views replaced handed back (`release`)


def _layout(variables: Sequence[Tensor], slots: Slots) -> FlatLayout | None:
    """Moves the group into flat storage; None (nothing moved) when it cannot: a variable of
    another dtype or device than the group's (``param.data = t.double()``), one that is not
    ``movable``, or a slot that is not contiguous."""
    var0 = variables[0]
    if (
        any(v.dtype != var0.dtype or v.device != var0.device for v in variables)
        or not all(t.is_contiguous() for lst in slots.values() for t in lst)
        or not movable(variables)
    ):
        return None
    sizes = [v.numel() for v in variables]
    # (under the caller's inference mode the buffers would be inference tensors, and so would
    # the parameters moved into them)
    with torch.inference_mode(False), torch.no_grad():
        var_buf = rehome(variables, sizes)
        flat_slots = {name: [rehome(lst, sizes)] for name, lst in slots.items()}
        # (uninitialised: every window is written before it is read, and pages never
        # written, as when large gradients of the caller's are used in place, stay unmapped)
        grads = torch.empty_like(var_buf)
    views = [g.view(v.shape) for g, v in zip(grads.split(sizes), variables)]
    return FlatLayout(
        var_buf,
        list(map(Tensor.data_ptr, variables)),
        flat_slots,
        [list(map(Tensor.data_ptr, lst)) for lst in slots.values()],
        grads,
        views,
        list(map(Tensor.data_ptr, views)),
    )


def _moved(layout: FlatLayout, variables: Sequence[Tensor], slots: Slots) -> bool:
    """Whether a variable or slot is no longer the window the layout made (new storage, or the
    same address with other strides, e.g. ``param.data = param.data.t()``)."""
    return (
        list(map(Tensor.data_ptr, variables)) != layout.pointers
        or not all(map(Tensor.is_contiguous, variables))
        or any(
            list(map(Tensor.data_ptr, lst)) != ptrs
            for lst, ptrs in zip(slots.values(), layout.slot_pointers)
        )
    )


def run_flat(
    rule: Rule,
    variables: Sequence[Tensor],
    grads: Sequence[Tensor],
    slots: Slots,
    c: Any,
    cache: dict[str, Any],
) -> None:
    """Runs the rule once (compiled) over the group's flat storage (``FlatLayout``).

    The first step moves the variables and slots into one buffer each. While the group cannot
    move (``_layout``), it runs ``run_compiled`` (the same numbers) and tries again at the next
    step; a step that finds a variable or slot moved since lays the group out again. Gradients
    that are the layout's own views (``.grad`` under ``GRAD_VIEWS``) are used in place; others
    are copied into the gradient buffer by one foreach copy.
    """
    layout: FlatLayout | None = cache.get("flat_storage")
    if layout is not None and _moved(layout, variables, slots):
        del cache["flat_storage"]
        layout = None  # (its buffers must not count as views of the variables' storage)
    if layout is None:
        # (the compiled engine's aliases hold the variables' storages: `movable` would count
        # them as views that must keep seeing the variables)
        cache.pop("aliases", None)
        layout = _layout(variables, slots)
        if layout is None:
            # (the chunked engine: it keeps no view of the variables that would stop them
            # from moving later, and its numbers are the flat engine's)
            run_compiled(rule, variables, grads, slots, c)
            return
        cache["flat_storage"] = layout
    grad_pointers = list(map(Tensor.data_ptr, grads))
    packed = grad_pointers != layout.grad_pointers or not all(map(Tensor.is_contiguous, grads))
    if layout.assigned and not layout.released:
        # (the step that gave `.grad` the views still held the gradients they replaced)
        release()
        layout.released = True
    if packed:
        start = layout.grads.data_ptr()
        end = start + layout.grads.numel() * layout.grads.element_size()
        inside = range(start, end).__contains__  # (a C-level test per pointer)
        if any(map(inside, grad_pointers)):
            # a gradient that is a view of the buffer, elsewhere than its own (`.grad`
            # swapped): the copy would read what it has just overwritten
            grads = [g.clone() if inside(p) else g for g, p in zip(grads, grad_pointers)]
    if packed and layout.variables.numel() >= FLAT_MAX_MEAN_NUMEL * len(variables):
        # Large tensors and gradients of the caller's: copying the gradients in would cost more
        # memory traffic than the per-tensor calls it saves, so the chunked compiled engine runs
        # on the (re-homed) tensors themselves: the same kernel, the same numbers.
        run_compiled(rule, variables, grads, slots, c, cache)
        if layout.assign_views and GRAD_VIEWS.get():
            _assign_grad_views(layout, variables, grads, grad_pointers, copy=True)
        return
    if packed:
        # (a foreach copy into the views, on two threads: `torch.cat` of reshaped gradients
        # takes twice as long as one thread's)
        copy_all(layout.grad_views, grads)
    run_compiled(rule, [layout.variables], [layout.grads], layout.slots, c, cache, chunk=1)
    if packed and layout.assign_views and GRAD_VIEWS.get():
        _assign_grad_views(layout, variables, grads, grad_pointers)


def _assign_grad_views(
    layout: FlatLayout,
    variables: Sequence[Tensor],
    grads: Sequence[Tensor],
    pointers: list[int],
    copy: bool = False,
) -> None:
    """Makes each variable's ``.grad`` that was the gradient applied a view of the gradient
    buffer with the same values (``copy``: copied in first). If a later step finds the views
    gone (``zero_grad()`` sets ``.grad`` to None by default; ``zero_grad(set_to_none=False)``
    keeps them), the group stops."""
    if layout.assigned:
        layout.assign_views = False
        return
    if copy:
        torch._foreach_copy_(layout.grad_views, list(grads))
    for var, view, ptr in zip(variables, layout.grad_views, pointers):
        grad = var.grad
        if grad is not None and grad.data_ptr() == ptr and grad.shape == view.shape:
            var.grad = view
    layout.assigned = True


def select(
    implementation: str,
    elementwise: bool,
    numel: int = 0,
    count: int = 1,
    slots: int = 1,
    compile_whole: bool = False,
) -> Callable[..., None]:
    """The engine for a group of ``count`` tensors with ``numel`` elements and ``slots`` slot
    names; ``compile_whole``: a whole-tensor rule that may be compiled per tensor
    (docs/performance.md: Engines)."""
    if not elementwise:
        compiled = implementation in ("compiled", "flat") or (
            implementation == "auto" and numel >= AUTO_COMPILE_NUMEL
        )
        return run_whole_compiled if compile_whole and compiled else run_per_tensor
    if implementation == "per_tensor":
        return run_per_tensor
    if implementation == "foreach":
        return run_foreach
    if implementation == "flat":
        return run_flat if count > 1 else run_compiled
    # The flat engine packs the variables and gradients every step: it pays for a rule with
    # state (Adam: 2x faster than foreach on 200 small tensors), not for a rule without
    # (SGD without momentum: 1.8x slower), where `auto` keeps foreach.
    if count >= FLAT_MIN_TENSORS and numel < FLAT_MAX_MEAN_NUMEL * count:
        if slots or implementation == "compiled":
            return run_packed
        return run_foreach
    if implementation == "compiled" or numel >= AUTO_COMPILE_NUMEL:
        return run_compiled
    return run_foreach


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a rule computes in: float32 for float16/bfloat16 variables, else their own.

    fidelity: TF's optimizer_v2 computes half-precision variables in their own precision, where
    bfloat16 rounds beta_2 = 0.999 to 1 (Adam never moves; Nadam divides by 0) and float16's
    epsilon underflows; like torch.optim, kerasopt computes coefficients and the rule in float32
    and rounds once when it stores. float32 and float64 are exactly TF.
    """
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def decay_(var: Any, weight_decay: Any, lr_t: Any) -> None:
    """Decoupled weight decay, in place (a tensor or a ``TensorList``).

    Keras: variable - variable * cast(wd) * lr; fidelity: TF's cast of a Python float goes
    through float32 (the caller passes ``weight_decay`` cast so; visible in float64).
    """
    var.sub_(var * weight_decay * lr_t)


@dataclass(eq=False)
class Group:
    """Variables of one (device, dtype, slot layout) within a call, with their slot lists."""

    key: tuple[torch.device, torch.dtype]
    positions: list[int]
    variables: list[Tensor]
    slots: dict[str, list[Tensor]]  # by slot name, in the rule's order
    numel: int = 0
    weight_decay: float | None = None
    dtensor: bool = False  # FSDP2 parameters: the engines see their local shards
    compute: torch.dtype = torch.float32  # the dtype the rule computes in (``compute_dtype``)
    cache: dict[str, Any] = field(default_factory=dict)  # the engine's, for this composition


def groups(
    dense: Sequence[tuple[Tensor, Tensor]],
    store: SlotStore,
    slot_names_for: Callable[[Record], tuple[str, ...]],
    weight_decay_for: Callable[[Record], float | None],
    weight_decay: Any,
    slot_arguments: Mapping[str, str],
) -> list[Group]:
    """The groups of a step's dense (variable, gradient) pairs, built once per composition.

    ``slot_names_for`` and ``weight_decay_for`` are the optimizer's per-variable answers, and
    ``slot_arguments`` its rule's parameter names for slots not named like them;
    ``weight_decay`` (its attribute) is part of the composition, so ``opt.weight_decay = x``
    regroups. The cache lives in ``store`` and is cleared whenever the registry changes.
    """
    # (a variable's dtype and device are part of it: `model.double()` keeps the identities)
    key = (weight_decay, *((id(v), v.dtype, v.device) for v, _ in dense))
    cache = store.group_cache
    found = cache.get(key)
    if found is not None:
        return found
    by_key: dict[tuple[Any, ...], Group] = {}
    for i, (var, _) in enumerate(dense):
        record = store.by_id[id(var)]
        names = slot_names_for(record)
        wd = weight_decay_for(record)
        sharded = _distributed.is_dtensor(var)
        gkey = (var.device, var.dtype, names, wd, sharded)
        group = by_key.get(gkey)
        if group is None:
            group = Group(
                (var.device, var.dtype),
                [],
                [],
                {slot_arguments.get(name, name): [] for name in names},
                weight_decay=wd,
                dtensor=sharded,
                compute=compute_dtype(var.dtype),
            )
            by_key[gkey] = group
        group.positions.append(i)
        group.variables.append(var)
        group.numel += var.numel()
        for name in names:
            group.slots[slot_arguments.get(name, name)].append(record.slots[name])
    built = list(by_key.values())
    if len(cache) > 16:
        cache.clear()
    cache[key] = built
    return built


def run_group(
    rule: Rule,
    group: Group,
    grads: Sequence[Tensor],
    c: Any,
    implementation: str,
    elementwise: bool,
    compile_whole: bool = False,
) -> None:
    """Runs ``rule`` over one group with the engine ``implementation`` selects for it."""
    chosen = group.cache.get("engine")
    if chosen is not None and chosen[0] == (implementation, elementwise, compile_whole):
        run = chosen[1]
    else:
        run = select(
            implementation,
            elementwise,
            group.numel,
            len(group.variables),
            len(group.slots),
            compile_whole,
        )
        if group.key[1] in COMPLEX_DTYPES and run not in (run_per_tensor, run_foreach):
            # inductor does not compile complex arithmetic
            run = run_foreach if elementwise else run_per_tensor
        group.cache["engine"] = ((implementation, elementwise, compile_whole), run)
    variables: Sequence[Tensor] = group.variables
    slots: Slots = group.slots
    if group.dtensor:
        if run is run_flat:
            run = run_compiled  # FSDP2 owns its shards' storage: they are not re-homed
        if not elementwise:
            run_whole_tensors(rule, variables, grads, slots, c)
            return
        # FSDP2: an elementwise rule updates each rank's shards, with no communication
        variables = [_distributed.local(v) for v in variables]
        grads = [_distributed.local(g) for g in grads]
        slots = {name: [_distributed.local(t) for t in lst] for name, lst in slots.items()}
    if group.compute == group.key[1]:
        run(rule, variables, grads, slots, c, group.cache)
    else:
        run_in_float32(run, rule, variables, grads, slots, c)


def run_in_float32(
    run: Callable[..., None],
    rule: Rule,
    variables: Sequence[Tensor],
    grads: Sequence[Tensor],
    slots: Slots,
    c: Any,
) -> None:
    """One rule over half-precision tensors, computed in float32 and rounded once on store."""
    if run is run_packed or run is run_flat:
        run = run_compiled  # the flat engines' caches hold on to their operands
    wide = [v.float() for v in variables]
    wide_slots = {name: [t.float() for t in lst] for name, lst in slots.items()}
    run(rule, wide, [g.float() for g in grads], wide_slots, c, {})
    copy_all(variables, wide)
    for lst, wide_lst in zip(slots.values(), wide_slots.values()):
        narrow = [(t, w) for t, w in zip(lst, wide_lst) if t is not w]
        if narrow:
            copy_all([t for t, _ in narrow], [w for _, w in narrow])


def run_whole_tensors(
    rule: Rule,
    variables: Sequence[Tensor],
    grads: Sequence[Tensor],
    slots: Slots,
    c: Any,
) -> None:
    """A whole-tensor rule (norms, factored moments, orthogonalisation) on sharded
    variables: each is gathered, updated identically on every rank, and each rank keeps its
    shard (slots of another shape than the variable's are plain tensors, alike on every
    rank). Half-precision tensors are computed in float32 and rounded once, as on every other
    path (``compute_dtype``)."""
    for i, var in enumerate(variables):
        own = {name: lst[i] for name, lst in slots.items()}
        whole = {name: _distributed.full(t) for name, t in own.items()}
        whole_var = _distributed.full(var)
        grad = _distributed.full(grads[i])
        args = (rule, [whole_var], [grad], {name: [t] for name, t in whole.items()}, c)
        if compute_dtype(whole_var.dtype) == whole_var.dtype:
            run_per_tensor(*args)
        else:
            run_in_float32(run_per_tensor, *args)
        for target, value in zip((var, *own.values()), (whole_var, *whole.values())):
            if _distributed.is_dtensor(target):
                _distributed.write_shard(target, value)
