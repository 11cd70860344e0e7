"""``python -m kerasopt bench`` runs and reports ratios for every contender."""

from __future__ import annotations

from kerasopt.__main__ import bench, main


def test_bench_prints_ratios_to_torch_optim(capsys):
    ratios = bench(tensors=4, numel=64, rounds=3)
    for name in ("Adam", "SGD"):
        assert ratios[f"{name}/foreach"] == 1.0
        for key in ("keras", "keras flat", "kerasopt.optim", "optim flat", "fused"):
            assert ratios[f"{name}/{key}"] > 0
    assert "x torch.optim foreach" in capsys.readouterr().out
    assert main(["bench", "--tensors", "2", "--numel", "8", "--rounds", "2"]) == 0


def test_bench_step_writes_the_table_as_markdown_and_a_chart(tmp_path, monkeypatch):
    """benchmarks/bench_step.py, tiny: every front end and engine asked for gets a row, written
    as Markdown and drawn as a PNG."""
    import sys
    from pathlib import Path

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_step

    monkeypatch.setattr(bench_step, "roofline_gbs", lambda: 10.0)
    md, png = tmp_path / "table.md", tmp_path / "chart.png"
    args = ["--optimizers", "SGD", "RMSprop", "--workloads", "many_small", "--scale", "0.001"]
    args += ["--impls", "foreach", "optim:foreach", "--steps", "2", "--warmup", "0"]
    assert bench_step.main([*args, "--markdown", str(md), "--png", str(png)]) == 0
    rows = [line for line in md.read_text().splitlines() if line.startswith("| many small")]
    engines = [(r.split(" | ")[1], r.split(" | ")[2]) for r in rows]
    assert engines == [
        ("SGD", "torch loop"),
        ("SGD", "torch foreach"),
        ("SGD", "torch fused"),
        ("SGD", "foreach"),
        ("SGD", "optim:foreach"),
        ("RMSprop", "torch loop"),
        ("RMSprop", "torch foreach"),
        ("RMSprop", "foreach"),
        ("RMSprop", "optim:foreach"),
    ]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    del sys.modules["bench_step"]


def test_bench_step_adds_keras3_as_a_peer_where_it_is_installed(tmp_path, monkeypatch):
    """Where Keras 3 runs on torch, each optimizer it has gets a "keras3 (torch)" row and every
    row a ratio to it (here a stand-in for Keras: it is never a dependency of kerasopt)."""
    import sys
    import types
    from pathlib import Path

    import torch

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "benchmarks"))
    import bench_step

    class SGD:
        def build(self, variables):
            self.variables = variables

        def apply_gradients(self, pairs):
            for g, v in pairs:
                v.data.sub_(0.01 * g)

    fake = types.SimpleNamespace(
        Variable=lambda t: torch.nn.Parameter(t.clone()), optimizers=types.SimpleNamespace(SGD=SGD)
    )
    monkeypatch.setattr(bench_step, "keras3", lambda: fake)
    monkeypatch.setattr(bench_step, "roofline_gbs", lambda: 10.0)
    md = tmp_path / "table.md"
    args = ["--optimizers", "SGD", "RMSprop", "--workloads", "many_small", "--scale", "0.001"]
    args += ["--impls", "foreach", "--steps", "2", "--warmup", "0", "--markdown", str(md)]
    assert bench_step.main(args) == 0
    text = md.read_text()
    assert "| vs Keras 3 (torch backend) |" in text
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| many small")]
    engines = [(r[1], r[2]) for r in rows]
    assert ("SGD", "keras3 (torch)") in engines and ("RMSprop", "keras3 (torch)") not in engines
    sgd_foreach = next(r for r in rows if r[1:3] == ["SGD", "foreach"])
    assert sgd_foreach[7].endswith("x")  # the ratio to Keras 3
    rms_foreach = next(r for r in rows if r[1:3] == ["RMSprop", "foreach"])
    assert rms_foreach[7] == "-"  # no peer for RMSprop in the stand-in
    assert bench_step.main([*args, "--no-keras3"]) == 0
    assert "keras3 (torch)" not in md.read_text()
    del sys.modules["bench_step"]


def test_gpu_check_script_refuses_a_machine_without_cuda(tmp_path):
    """benchmarks/gpu_check.sh (#19 item 7, run on a GPU machine) parses, and where torch has
    no CUDA it stops at once with exit status 2 and says why, its log in $OUT."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import torch

    script = Path(__file__).parents[1] / "benchmarks" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    if torch.cuda.is_available():
        return  # (the script itself is the check there)
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable)
    done = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert done.returncode == 2
    log = (tmp_path / "gpu_check.log").read_text()
    assert "no CUDA device here" in log and "== engines" not in log
