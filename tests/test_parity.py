"""``python -m kerasopt parity``: the recorded TensorFlow run replays to rounding with kerasopt,
and torch.optim's closest settings do not."""

from __future__ import annotations

import pytest

pytest.importorskip("sklearn")

from kerasopt import __main__ as cli
from kerasopt._parity import load_record, replay


def test_record_is_small_and_complete():
    meta, arrays = load_record()
    assert [r["class"] for r in meta["runs"]] == ["Adam", "RMSprop", "SGD", "Adagrad"]
    for i in range(len(meta["runs"])):
        assert arrays[f"run{i}/W1"].shape == (meta["steps"], 64, 16)
        assert arrays[f"run{i}/loss"].shape == (meta["steps"],)


def test_kerasopt_replays_tensorflow_and_torch_optim_drifts():
    runs = replay(steps=4)
    assert len(runs) == 4
    for run in runs:
        assert len(run.kerasopt) == len(run.torch_optim) == 4
        # float64: kerasopt is TF to a few ulp of the weights (measured about 4e-15) ...
        assert max(run.kerasopt) < 1e-12, run.label
        # ... torch.optim's closest settings are not (Adagrad: only its float64 learning rate
        # against TF's float32 one; the others: epsilon placement, lr inside the velocity).
        assert run.torch_optim[-1] > 1e-10, run.label
        assert run.torch_optim[-1] > 1000 * max(run.kerasopt), run.label


def test_cli_writes_the_picture(tmp_path, capsys):
    out = tmp_path / "parity.png"
    assert cli.main(["parity", "--steps", "2", "--out", str(out)]) == 0
    assert out.stat().st_size > 1000
    assert "kerasopt" in capsys.readouterr().out
