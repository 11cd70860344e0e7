"""Optimizer step time: kerasopt's engines against torch.optim, as ratios measured in the same run.

Prints one table per workload: median step time (min/max) over many steps after warm-up, the ratio
to torch.optim's for-loop, foreach and fused implementations (where torch has them), the bytes an
optimizer moves per parameter, the achieved bandwidth and its share of the measured roofline.

    python benchmarks/bench_step.py                       # every optimizer, all three workloads
    python benchmarks/bench_step.py --optimizers Adam SGD --workloads large --steps 20
    python benchmarks/bench_step.py --scale 0.1           # 10x smaller workloads (quick look)
    python benchmarks/bench_step.py --device cuda         # on a GPU, with torch fused + CUDA graphs

On CUDA each timed step is synchronised, torch fused also runs captured in a CUDA graph
(``capturable=True``, the ``fused+graph`` row), and ``--memory`` reads the allocator's peak.

Numbers on a shared machine are noisy: compare ratios within one run, never lone times.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

import kerasopt as ko
from kerasopt._copies import release

# Bytes read + written per float32 parameter by one step (var, grad and slots; e.g. Adam reads
# var, grad, m, v and writes var, m, v: 7 x 4 bytes).
BYTES_PER_PARAM = {
    "SGD": 12,  # read var, grad; write var (momentum: 20)
    "Adam": 28,
    "AdamW": 28,
    "Adamax": 28,
    "Adagrad": 20,
    "Adadelta": 28,
    "RMSprop": 20,
    "Nadam": 28,
    "Ftrl": 28,
    "Lion": 20,
    "Lamb": 28,
    "Adafactor": 20,
    "Muon": 20,
}

TORCH_EQUIVALENT: dict[str, tuple[str, dict[str, Any]]] = {
    "SGD": ("SGD", {"lr": 0.01}),
    "Adam": ("Adam", {"lr": 1e-3}),
    "AdamW": ("AdamW", {"lr": 1e-3}),
    "Adagrad": ("Adagrad", {"lr": 1e-3}),
    "Adadelta": ("Adadelta", {"lr": 1e-3}),
    "Adamax": ("Adamax", {"lr": 1e-3}),
    "RMSprop": ("RMSprop", {"lr": 1e-3}),
    "Nadam": ("NAdam", {"lr": 1e-3}),
    "Adafactor": ("Adafactor", {"lr": 1e-3}),
}
FUSED = {"SGD", "Adam", "AdamW", "Adagrad"}


@dataclass
class Workload:
    name: str
    shapes: list[tuple[int, ...]]

    @property
    def params(self) -> int:
        return sum(int(torch.Size(s).numel()) for s in self.shapes)


def workloads(scale: float) -> dict[str, Workload]:
    # width 576: 12 layers of 12*d*d weights + embeddings = ~50M parameters in 148 tensors
    d = max(64, int(576 * scale**0.5) // 64 * 64)
    layers = 12
    # transformer-like: embeddings, per layer qkv/out/mlp weights + biases + norms (~150 tensors)
    shapes: list[tuple[int, ...]] = [(8 * d, d), (512, d)]
    for _ in range(layers):
        shapes += [(3 * d, d), (3 * d,), (d, d), (d,), (4 * d, d), (4 * d,), (d, 4 * d), (d,)]
        shapes += [(d,), (d,), (d,), (d,)]
    shapes += [(d,), (d,)]
    n_small = max(50, int(2000 * min(scale, 1.0)))
    small = [(1024 + (i * 97) % 3072,) for i in range(n_small)]
    one = [(int(50_000_000 * scale),)]
    return {
        "transformer": Workload(f"transformer ({len(shapes)} tensors)", shapes),
        "many_small": Workload(f"many small ({len(small)} tensors)", small),
        "large": Workload("one large tensor", one),
    }


#: where the benchmark's tensors live (``--device``)
DEVICE = torch.device("cpu")


def make_params(w: Workload, seed: int = 0) -> tuple[list[torch.nn.Parameter], list[torch.Tensor]]:
    """The workload's parameters and gradients on ``DEVICE`` (drawn on the CPU: the same values
    on every device)."""
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter((torch.randn(s, generator=g) * 0.02).to(DEVICE)) for s in w.shapes]
    grads = [(torch.randn(s, generator=g) * 0.01).to(DEVICE) for s in w.shapes]
    return params, grads


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def time_steps(step: Callable[[], None], steps: int, warmup: int) -> list[float]:
    """Wall time of each of ``steps`` steps after ``warmup`` (on CUDA, from an idle device to the
    step's last kernel's end)."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        _sync()
        t0 = time.perf_counter()
        step()
        _sync()
        times.append(time.perf_counter() - t0)
    return times


def roofline_gbs(n: int = 50_000_000, repeats: int = 8) -> float:
    """Measured in-place streaming bandwidth, in GB/s: the best of ``a *= s`` (8 bytes per element)
    and ``a += b`` (12). An optimizer step updates in place too; out-of-place kernels would also
    pay for write-allocate and understate what the memory system delivers."""
    a, b = torch.randn(n, device=DEVICE), torch.randn(n, device=DEVICE)
    mul = 8 * n / min(time_steps(lambda: a.mul_(1.0000001), repeats, 2)) / 1e9
    add = 12 * n / min(time_steps(lambda: a.add_(b), repeats, 2)) / 1e9
    return max(mul, add)


def kerasopt_step(
    name: str, impl: str, params: list[torch.nn.Parameter], grads: list[torch.Tensor]
) -> Callable[[], Any]:
    """One step of kerasopt's ``name`` on ``params``: ``impl`` an engine (the Keras API's
    ``apply_gradients``) or ``optim:<engine>`` (the ``kerasopt.optim`` step, ``.grad`` set once
    and kept, as under ``zero_grad(set_to_none=False)``: under flat storage it stays the
    gradient buffer's view)."""
    front, _, engine = impl.rpartition(":")
    kwargs: dict[str, Any] = (
        {"implementation": engine} if engine != "compiled" else {"jit_compile": True}
    )
    if front == "optim":
        for p, g in zip(params, grads):
            p.grad = g
        step: Callable[[], Any] = getattr(ko.optim, name)(params, **kwargs).step
        return step
    opt = getattr(ko.optimizers, name)(**kwargs)
    pairs = list(zip(grads, params))
    return lambda: opt.apply_gradients(pairs)


def bench_kerasopt(
    name: str, impl: str, w: Workload, steps: int, warmup: int
) -> tuple[list[float], float]:
    """Times ``kerasopt_step``: its first step (compiles) and ``steps`` after ``warmup``."""
    params, grads = make_params(w)
    step = kerasopt_step(name, impl, params, grads)
    t0 = time.perf_counter()
    step()
    first = time.perf_counter() - t0
    times = time_steps(step, steps, warmup)
    return times, first


def bench_torch(name: str, mode: str, w: Workload, steps: int, warmup: int) -> list[float]:
    """torch.optim's ``name`` as its for-loop, foreach or fused step; ``fused+graph`` (CUDA): the
    fused step with ``capturable=True`` captured once in a CUDA graph and replayed."""
    return time_steps(torch_step(name, mode, *make_params(w)), steps, warmup)


def torch_step(
    name: str, mode: str, params: list[torch.nn.Parameter], grads: list[torch.Tensor]
) -> Callable[[], Any]:
    cls_name, kw = TORCH_EQUIVALENT[name]
    for p, g in zip(params, grads):
        p.grad = g
    graph = mode == "fused+graph"
    extra: dict[str, Any] = {"foreach": False} if mode == "loop" else {mode.split("+")[0]: True}
    if graph:
        extra["capturable"] = True
    opt = getattr(torch.optim, cls_name)(params, **kw, **extra)
    if not graph:
        step: Callable[[], Any] = opt.step
        return step
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # (state made and kernels loaded outside the capture)
            opt.step()
    torch.cuda.current_stream().wait_stream(side)
    cuda_graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(cuda_graph):
        opt.step()
    return cuda_graph.replay


def keras3() -> Any:
    """Keras 3 on its torch backend, the peer column, where it is installed (never a dependency
    of kerasopt: ``pip install keras`` in a scratch environment); None elsewhere or where Keras
    runs on another backend."""
    if importlib.util.find_spec("keras") is None:
        return None
    os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    return keras if keras.backend.backend() == "torch" else None


def bench_keras3(name: str, w: Workload, steps: int, warmup: int) -> list[float] | None:
    """Keras 3's own ``keras.optimizers.<name>`` (its defaults) stepping ``keras.Variable``s with
    torch gradients, as a Keras 3 model on the torch backend does; None without Keras 3 or the
    optimizer."""
    keras = keras3()
    cls = None if keras is None else getattr(keras.optimizers, name, None)
    if cls is None:
        return None
    params, grads = make_params(w)
    variables = [keras.Variable(p.detach()) for p in params]
    opt = cls()
    opt.build(variables)
    pairs = list(zip(grads, variables))
    return time_steps(lambda: opt.apply_gradients(pairs), steps, warmup)


def _status_bytes(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def peak_memory_child(name: str, impl: str, workload: str, scale: float) -> None:
    """(In a subprocess) peak resident memory of 3 steps above the params+grads baseline."""
    w = workloads(scale)[workload]
    params, grads = make_params(w)
    gc.collect()
    release()  # (what making the workload freed, handed back: the baseline is what is held)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets the peak (VmHWM) to the current resident size
    base = _status_bytes("VmRSS")
    if impl.startswith("torch "):
        mode = impl.split()[1]
        for p, g in zip(params, grads):
            p.grad = g
        cls_name, kw = TORCH_EQUIVALENT[name]
        extra: dict[str, Any] = {"foreach": False} if mode == "loop" else {mode: True}
        opt = getattr(torch.optim, cls_name)(params, **kw, **extra)
        step: Callable[[], Any] = opt.step
    else:
        step = kerasopt_step(name, impl, params, grads)
    # (the parameters' ``.grad`` or the Keras API's pairs hold the gradients, as in training;
    # this list would keep a gradient alive that kerasopt.optim's flat engine replaces by its
    # view of the gradient buffer)
    grads.clear()
    for _ in range(3):
        step()
    print(max(0, _status_bytes("VmHWM") - base))


def peak_memory(name: str, impl: str, workload: str, scale: float) -> float | None:
    """Peak memory (MB) an optimizer step adds above params + grads: slots and temporaries."""
    here = os.path.dirname(os.path.abspath(__file__))
    code = (
        f"import sys; sys.path.insert(0, {here!r}); import bench_step as b; "
        f"b.torch.set_num_threads(2); b.peak_memory_child({name!r}, {impl!r}, {workload!r}, {scale!r})"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    try:
        return int(out.stdout.strip().splitlines()[-1]) / 1e6
    except (ValueError, IndexError):
        return None


def cuda_peak_memory(name: str, impl: str, w: Workload) -> float:
    """(CUDA) Peak memory (MB) that 3 steps add above params + grads, from the allocator."""
    params, grads = make_params(w)
    torch.cuda.synchronize(DEVICE)
    torch.cuda.reset_peak_memory_stats(DEVICE)
    base = torch.cuda.memory_allocated(DEVICE)
    if impl.startswith("torch "):  # (a CUDA graph's capture steps count too)
        step = torch_step(name, impl.split()[1], params, grads)
    else:
        step = kerasopt_step(name, impl, params, grads)
    for _ in range(3):
        step()
    torch.cuda.synchronize(DEVICE)
    return max(0, torch.cuda.max_memory_allocated(DEVICE) - base) / 1e6


def fmt_ms(times: list[float]) -> str:
    return f"{statistics.median(times) * 1e3:8.2f} ({min(times) * 1e3:.1f}-{max(times) * 1e3:.1f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--optimizers", nargs="*", default=sorted(BYTES_PER_PARAM))
    parser.add_argument("--workloads", nargs="*", default=["transformer", "many_small", "large"])
    parser.add_argument("--impls", nargs="*", default=["per_tensor", "foreach", "compiled", "flat"])
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", help="cpu, or cuda where torch has it")
    parser.add_argument(
        "--memory", action="store_true", help="also measure peak memory (subprocesses)"
    )
    parser.add_argument(
        "--no-keras3", action="store_true", help="leave out Keras 3 (where it is installed)"
    )
    parser.add_argument("--markdown", help="also write the table as Markdown to this file")
    parser.add_argument("--png", help="also draw the ratios to torch fused as a PNG chart")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    global DEVICE
    DEVICE = torch.device(args.device)
    cuda = DEVICE.type == "cuda"
    roof = roofline_gbs()
    where = torch.cuda.get_device_name(DEVICE) if cuda else f"{args.threads} threads"
    print(f"torch {torch.__version__}, {where}, in-place streaming roofline {roof:.1f} GB/s")
    wl = workloads(args.scale)
    table: list[list[str]] = []
    for key in args.workloads:
        w = wl[key]
        print(f"\n## {w.name}: {w.params / 1e6:.1f}M params")
        print(
            f"{'optimizer':<10} {'impl':<14} {'median ms (min-max)':<24} {'vs loop':>8} {'vs foreach':>10} {'vs fused':>9} {'vs Keras 3':>10} {'GB/s':>6} {'%roof':>6} {'1st step s':>10}"
            + (f" {'peak extra':>12}" if args.memory else "")
            + (f" {'vs fused+graph':>12}" if cuda else "")
        )
        for name in args.optimizers:
            base: dict[str, float] = {}
            rows: list[tuple[str, list[float], float | None]] = []
            if name in TORCH_EQUIVALENT:
                modes = ["loop", "foreach"] + (["fused"] if name in FUSED else [])
                modes += ["fused+graph"] if cuda and name in FUSED else []
                for mode in modes:
                    times = bench_torch(name, mode, w, args.steps, args.warmup)
                    base[mode] = statistics.median(times)
                    rows.append((f"torch {mode}", times, None))
                    gc.collect()
            # (Keras 3's peer runs on the CPU tensors its backend makes)
            peer = (
                None if args.no_keras3 or cuda else bench_keras3(name, w, args.steps, args.warmup)
            )
            if peer is not None:
                base["keras3"] = statistics.median(peer)
                rows.append(("keras3 (torch)", peer, None))
                gc.collect()
            for impl in args.impls:
                try:
                    times, first = bench_kerasopt(name, impl, w, args.steps, args.warmup)
                except Exception as e:  # report and go on: one failure should not hide the table
                    print(f"{name:<10} {impl:<14} failed: {type(e).__name__}: {e}", file=sys.stderr)
                    continue
                rows.append((impl, times, first))
                gc.collect()
            for label, times, first in rows:
                med = statistics.median(times)
                ratios = [
                    f"{med / base[m]:.2f}x" if m in base else "-"
                    for m in ("loop", "foreach", "fused", "keras3")
                ]
                graphed = f"{med / base['fused+graph']:.2f}x" if "fused+graph" in base else "-"
                gbs = BYTES_PER_PARAM[name] * w.params / med / 1e9
                first_s = f"{first:.2f}" if first is not None else ""
                mem = ""
                if args.memory and label.startswith("keras3"):
                    mem = "          -"
                elif args.memory:
                    mb = (
                        cuda_peak_memory(name, label, w)
                        if cuda
                        else peak_memory(name, label, key, args.scale)
                    )
                    mem = f" {mb:9.0f} MB" if mb is not None else "           ?"
                print(
                    f"{name:<10} {label:<14} {fmt_ms(times):<24} {ratios[0]:>8} {ratios[1]:>10} {ratios[2]:>9} {ratios[3]:>10} {gbs:6.1f} {100 * gbs / roof:5.0f}% {first_s:>10}{mem}"
                    + (f" {graphed:>12}" if cuda else "")
                )
                table.append(
                    [w.name, name, label, f"{med * 1e3:.2f}", *ratios, f"{100 * gbs / roof:.0f}%"]
                    + ([mem.strip()] if args.memory else [])
                    + ([graphed] if cuda else [])
                )
            sys.stdout.flush()
    header = ["workload", "optimizer", "engine", "median ms", "vs torch loop"]
    header += ["vs torch foreach", "vs torch fused", "vs Keras 3 (torch backend)", "% of roofline"]
    header += ["peak extra"] if args.memory else []
    header += ["vs torch fused + CUDA graph"] if cuda else []
    if args.markdown:
        write_markdown(args.markdown, header, table, roof, args)
    if args.png:
        draw(args.png, table)
    return 0


def write_markdown(
    path: str, header: list[str], rows: list[list[str]], roof: float, args: Any
) -> None:
    lines = [
        f"torch {torch.__version__}, {args.device if args.device != 'cpu' else f'{args.threads} threads'}, median of {args.steps} steps; "
        f"in-place streaming roofline {roof:.1f} GB/s. Engines: the Keras API's "
        "`apply_gradients`; `optim:` the `kerasopt.optim` step.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"\nMarkdown table written to {path}")


def draw(path: str, rows: list[list[str]]) -> None:
    """Grouped bars, one group per optimizer and one bar per kerasopt engine, a panel per
    workload: step time relative to torch fused (to torch foreach where torch has no fused
    kernel, marked *); below the line is faster."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(dict.fromkeys(r[0] for r in rows))
    engines = list(dict.fromkeys(r[2] for r in rows if not r[2].startswith(("torch", "keras3"))))
    fig, axes = plt.subplots(len(workloads), 1, figsize=(10, 3.4 * len(workloads)), squeeze=False)
    width = 0.8 / max(1, len(engines))
    for ax, workload in zip(axes[:, 0], workloads):
        names = list(dict.fromkeys(r[1] for r in rows if r[0] == workload))
        for k, engine in enumerate(engines):
            xs, values = [], []
            for i, name in enumerate(names):
                for r in rows:
                    if r[0] == workload and r[1] == name and r[2] == engine:
                        ratio = r[6] if r[6] != "-" else r[5]
                        xs.append(i + (k - (len(engines) - 1) / 2) * width)
                        values.append(float(ratio.rstrip("x")))
            ax.bar(xs, values, width, label=engine)
        ax.axhline(1.0, color="black", linewidth=0.8)
        fused = {r[1] for r in rows if r[2] == "torch fused"}
        ax.set_xticks(range(len(names)), [n if n in fused else n + "*" for n in names])
        ax.set_ylabel("step time / torch's")
        ax.set_title(f"{workload}: vs torch fused (* vs torch foreach)", fontsize=10)
        ax.legend(fontsize=8, ncol=len(engines))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"chart written to {path}")


if __name__ == "__main__":
    raise SystemExit(main())
