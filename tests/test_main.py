"""``python -m kerasopt bench`` runs and reports ratios for every contender."""

from __future__ import annotations

from kerasopt.__main__ import bench, main


def test_bench_prints_ratios_to_torch_optim(capsys):
    ratios = bench(tensors=4, numel=64, rounds=3)
    for name in ("Adam", "SGD"):
        assert ratios[f"{name}/foreach"] == 1.0
        for key in ("keras", "kerasopt.optim", "fused"):
            assert ratios[f"{name}/{key}"] > 0
    assert "x torch.optim foreach" in capsys.readouterr().out
    assert main(["bench", "--tensors", "2", "--numel", "8", "--rounds", "2"]) == 0
