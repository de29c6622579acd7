"""The `pgm` command line: list and draw."""

import subprocess
import sys

import pytest

from pgm.cli import main

USER_PROGRAM = '''
import pyro, pyro.distributions as dist, torch

def coin_flips():
    p = pyro.sample("p", dist.Beta(2.0, 2.0))
    with pyro.plate("flips", 10):
        pyro.sample("x", dist.Bernoulli(p), obs=torch.ones(10))
'''


def test_list_prints_registered_models(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "rbm" in out and "RBM" in out and "burglary" in out


def test_draw_zoo_model_at_unit_level(tmp_path, capsys):
    out = tmp_path / "rbm.dot"
    assert main(["draw", "rbm", "-o", str(out), "--units", "--set", "v_dim=4", "--set", "h_dim=3"]) == 0
    dot = out.read_text()
    assert dot.count(" -- ") == 12  # K(4,3)


def test_draw_user_program(tmp_path, monkeypatch):
    (tmp_path / "my_models.py").write_text(USER_PROGRAM)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["draw", "my_models:coin_flips", "-o", "coin.dot"]) == 0
    dot = (tmp_path / "coin.dot").read_text()
    assert "cluster_flips" in dot and "->" in dot


def test_draw_png_through_the_console_script(tmp_path):
    pytest.importorskip("pgm.draw")
    out = tmp_path / "burglary.png"
    result = subprocess.run(
        [sys.executable, "-m", "pgm.cli", "draw", "burglary", "-o", str(out)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["draw", "nope", "-o", "x.png"], "unknown model 'nope'"),
        (["draw", "no_such_module:f", "-o", "x.png"], "cannot import module"),
        (["draw", "rbm", "-o", "x.png", "--set", "v_dim"], "KEY=VALUE"),
        (["draw", "rbm", "-o", "x.png", "--set", "colour=3"], "does not accept"),
    ],
)
def test_bad_input_is_one_clear_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


# ---------------------------------------------------------------------- train, sample, eval
def _train(tmp_path, *argv):
    out = tmp_path / "run"
    code = main(["train", *argv, "--out", str(out), "--quiet", "--seed", "0"])
    return code, out


def test_train_sample_eval_resume_vae_on_digits(tmp_path, capsys):
    import json

    import torch

    code, out = _train(tmp_path, "vae", "--data", "digits", "--epochs", "1", "--batch-size", "256")
    assert code == 0, capsys.readouterr().err
    for name in ("config.json", "checkpoint.pt", "history.json", "loss.png", "graph.png", "samples.png"):
        assert (out / name).exists(), name
    config = json.loads((out / "config.json").read_text())
    assert config["engine"] == "svi" and config["model_settings"]["x_dim"] == 64  # filled from the data
    steps = len(json.loads((out / "history.json").read_text())["steps"]["step"])
    assert steps == 6  # ceil(1437 / 256)

    assert main(["train", "vae", "--data", "digits", "--epochs", "2", "--batch-size", "256", "--out", str(out),
                 "--quiet", "--seed", "0", "--resume"]) == 0
    assert len(json.loads((out / "history.json").read_text())["steps"]["step"]) == 12

    assert main(["sample", str(out), "-n", "5", "-o", str(tmp_path / "s.pt")]) == 0
    x = torch.load(tmp_path / "s.pt")
    assert x.shape == (5, 64) and ((x == 0) | (x == 1)).all()
    assert main(["sample", str(out), "-n", "9", "-o", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"

    assert main(["eval", str(out), "--num-samples", "5", "--limit", "50"]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert result["test_size"] == 50 and 0 < result["nll_nats"] < 64 * 0.7 + 1  # below the uniform 64 ln 2


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "vae", "--engine", "nope"], "unknown engine 'nope'"),
        (["train", "vae", "--engine", "mle"], "Engines that would work"),
        (["train", "vae", "--data", "nope"], "nope"),
        (["sample", "no_such_run", "-o", "x.png"], "not a run directory"),
    ],
)
def test_train_bad_input_is_one_clear_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_train_rbm_binarizes_the_digits_and_draws_a_grid(tmp_path, capsys):
    import json

    code, out = _train(tmp_path, "rbm", "--engine", "pcd", "--data", "digits", "--epochs", "1", "--batch-size", "200",
                       "--set", "h_dim=16")
    assert code == 0, capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())
    assert config["data_settings"]["binarize"] is True and config["model_settings"]["v_dim"] == 64
    assert (out / "samples.png").exists() and (out / "graph.png").exists()
    assert main(["eval", str(out), "--method", "ais", "--num-samples", "20", "--limit", "50"]) == 0
    result = json.loads((out / "eval.json").read_text())
    assert result["method"] == "ais" and 0 < result["nll_nats"] < 64 * 0.7 + 1


@pytest.mark.parametrize("engine", ["sliced-sm", "dsm", "nce", "pcd"])
def test_train_ebm_on_moons_draws_density_and_samples(engine, tmp_path, capsys):
    code, out = _train(tmp_path, "ebm", "--engine", engine, "--data", "moons", "--data-set", "n_samples=400",
                       "--epochs", "2", "--batch-size", "100", "--num-samples", "64")
    assert code == 0, capsys.readouterr().err
    assert (out / "samples.png").exists() and (out / "samples_density.png").exists()


def test_train_sampler_settings(tmp_path, capsys):
    code, out = _train(tmp_path, "ebm", "--engine", "pcd", "--data", "moons", "--data-set", "n_samples=200",
                       "--epochs", "1", "--batch-size", "100", "--engine-set", "sampler=mala",
                       "--engine-set", "sampler_step_size=0.03", "--engine-set", "k=3")
    assert code == 0, capsys.readouterr().err
    assert main(["train", "ebm", "--engine", "pcd", "--data", "moons", "--engine-set", "sampler=hmc",
                 "--out", str(tmp_path / "x")]) == 2
    assert "sampler: expected one of gibbs, ula, mala" in capsys.readouterr().err


def test_train_dbn_greedily_then_sample(tmp_path, capsys):
    code, out = _train(tmp_path, "dbn", "--data", "digits", "--epochs", "1", "--batch-size", "200",
                       "--set", "hidden_dims=(16, 8)")
    assert code == 0, capsys.readouterr().err
    assert (out / "history_layer0.json").exists() and (out / "history_layer1.json").exists()
    assert main(["sample", str(out), "-n", "4", "-o", str(tmp_path / "s.pt")]) == 0
    import torch

    assert torch.load(tmp_path / "s.pt").shape == (4, 64)
