"""`pgm train`, `pgm sample` and `pgm eval` never lose or corrupt a run: refusals change
nothing, one writer at a time, reruns need --resume or --overwrite, --seed reproduces bit for
bit, a run's config never makes pgm import code, and failures are one line."""

import hashlib
import json
import subprocess
import sys
import textwrap

import pytest
import torch

from inference import checkpoint as ckpt
from pgm.cli import main

#: A small, fast VAE run on the digits (12 steps).
SMALL = ["--set", "hidden_dims=(16,)", "--set", "z_dim=2", "--epochs", "1", "--quiet", "--num-samples", "4"]


def snapshot(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One trained run, copied by the tests that change things."""
    folder = tmp_path_factory.mktemp("runs") / "vae"
    assert main(["train", "vae", "--out", str(folder), *SMALL]) == 0
    return folder


def copy_run(trained, tmp_path):
    import shutil

    target = tmp_path / "vae"
    shutil.copytree(trained, target)
    return target


def one_line_error(capsys, *needles):
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err
    return err


# ---------------------------------------------------------------- refusals change nothing
@pytest.mark.parametrize("extra, needle", [
    (["--overwrite", "--engine", "mle"], "--engine mle"),                    # a refused engine
    (["--resume", "--engine", "pcd"], "engine: \"svi\" -> \"pcd\""),          # another engine kind
    (["--resume", "--set", "z_dim=3"], "model_settings.z_dim: 2 -> 3"),      # a size change on resume
    (["--resume", "--data", "moons"], "data: \"digits\" -> \"moons\""),       # another data set
    (["--overwrite", "--data", "moons"], "outside the support"),             # bad data for the model
    ([], "--resume"),                                                        # a rerun
])
def test_a_refused_train_leaves_the_run_as_it_was(trained, tmp_path, capsys, extra, needle):
    run = copy_run(trained, tmp_path)
    before = snapshot(run)
    base = ["--quiet", "--num-samples", "4"] if "--resume" in extra else SMALL  # a resume takes the saved settings
    argv = ["train", "vae", "--out", str(run), *base, *extra]
    capsys.readouterr()
    assert main(argv) == 2
    one_line_error(capsys, needle)
    assert snapshot(run) == before
    assert main(["sample", str(run), "-n", "4", "-o", str(tmp_path / "s.png")]) == 0


def test_overwrite_replaces_the_run_and_resume_continues_it(trained, tmp_path):
    run = copy_run(trained, tmp_path)
    assert main(["train", "vae", "--out", str(run), *SMALL, "--overwrite", "--seed", "3"]) == 0
    assert json.loads((run / "config.json").read_text())["seed"] == 3
    assert main(["train", "vae", "--out", str(run), "--resume", "--epochs", "2", "--quiet", "--lr", "0.0005"]) == 0
    config = json.loads((run / "config.json").read_text())
    assert config["epochs"] == 2 and config["seed"] == 3 and config["resumed"][-1]["lr"] == [0.001, 0.0005]
    assert ckpt.load_checkpoint(run / "checkpoint.pt")["step"] == 24


def test_a_second_writer_is_refused(trained, tmp_path, capsys):
    run = copy_run(trained, tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import time
            from inference.rundir import RunDirectory
            with RunDirectory({str(run)!r}).lock():
                print("locked", flush=True)
                time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(run)
        capsys.readouterr()
        assert main(["train", "vae", "--out", str(run), *SMALL, "--overwrite"]) == 2
        one_line_error(capsys, f"in use by process {holder.pid}")
        assert snapshot(run) == before
    finally:
        holder.kill()
        holder.wait()


# ---------------------------------------------------------------- reproducible
def test_the_same_seed_gives_the_same_model_bit_for_bit(tmp_path):
    states = []
    for name in ("a", "b"):
        assert main(["train", "vae", "--out", str(tmp_path / name), *SMALL, "--seed", "7"]) == 0
        states.append(ckpt.load_checkpoint(tmp_path / name / "checkpoint.pt")["model"])
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
    assert main(["train", "vae", "--out", str(tmp_path / "c"), *SMALL, "--seed", "8"]) == 0
    other = ckpt.load_checkpoint(tmp_path / "c" / "checkpoint.pt")["model"]
    assert not all(torch.equal(states[0][k], other[k]) for k in other)


# ---------------------------------------------------------------- no code from a run's config
def test_a_run_config_never_makes_pgm_import_its_module(trained, tmp_path, monkeypatch, capsys):
    run = copy_run(trained, tmp_path)
    (tmp_path / "evil.py").write_text("import pathlib\npathlib.Path('IMPORTED').write_text('yes')\nThing = None\n")
    config = json.loads((run / "config.json").read_text())
    config["model"] = "evil:Thing"
    (run / "config.json").write_text(json.dumps(config))
    monkeypatch.chdir(tmp_path)
    for command in (["sample", str(run), "-o", "s.png"], ["eval", str(run)]):
        capsys.readouterr()
        assert main(command) == 2
        one_line_error(capsys, "--model MODULE:ATTR")
    assert not (tmp_path / "IMPORTED").exists()
    assert str(tmp_path) not in sys.path and "" not in sys.path[:1] or (tmp_path / "IMPORTED").exists() is False


USER_MODEL = '''
import pyro, pyro.distributions as dist, torch
import pgm

class Exploding(pgm.Model):
    """x ~ Normal(loc, exp(log_scale)); a huge learning rate makes the loss non-finite."""
    def __init__(self, x_dim=2):
        super().__init__()
        self.x_dim = x_dim
        self.loc = torch.nn.Parameter(torch.zeros(x_dim))
        self.log_scale = torch.nn.Parameter(torch.zeros(x_dim))
    def model(self, x):
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(self.loc, self.log_scale.exp()).to_event(1), obs=x)
    def example_inputs(self, batch_size=2):
        return (torch.zeros(batch_size, self.x_dim),)
'''


def test_a_users_model_trains_and_samples_only_when_named(tmp_path, monkeypatch, capsys):
    (tmp_path / "mine.py").write_text(USER_MODEL)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert main(["train", "mine:Exploding", "--data", "moons", "--epochs", "2", "--out", "run", "--quiet",
                 "--engine", "mle"]) == 0
    capsys.readouterr()
    assert main(["sample", "run", "-o", "s.pt"]) == 2
    one_line_error(capsys, "--model MODULE:ATTR")
    assert main(["sample", "run", "--model", "mine:Exploding", "-n", "10", "-o", "s.pt"]) == 0
    assert torch.load(tmp_path / "s.pt").shape == (10, 2)


def test_a_non_finite_loss_is_one_line_with_the_step_and_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    (tmp_path / "mine.py").write_text(USER_MODEL)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    capsys.readouterr()
    code = main(["train", "mine:Exploding", "--data", "moons", "--epochs", "3", "--out", "run", "--quiet",
                 "--engine", "mle", "--lr", "1e6", "--batch-size", "4000"])
    assert code == 1
    one_line_error(capsys, "non-finite loss at step", "last good state")


# ---------------------------------------------------------------- one line, the flag named
@pytest.mark.parametrize("argv, needle", [
    (["train", "vae", "--data", "nope"], "--data: unknown dataset 'nope'"),
    (["train", "vae", "--data-set", "colour=3"], "--data-set"),
    (["train", "vae", "--engine", "nope"], "--engine: unknown engine 'nope'"),
    (["train", "vae", "--engine", "mle"], "Engines that would work: svi"),
    (["train", "vae", "--set", "hidden_dims=-5"], "--set"),
    (["train", "mine_missing:Model", "--data", "moons"], "cannot import module"),
    (["eval", "RUN", "--limit", "0"], "--limit"),
    (["sample", "no_such_run", "-o", "x.png"], "not a run directory"),
])
def test_expected_failures_are_one_line_naming_the_flag(argv, needle, trained, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = [str(trained) if a == "RUN" else a for a in argv]
    if argv[0] == "train":
        argv += ["--out", str(tmp_path / "run"), "--quiet"]
    capsys.readouterr()
    assert main(argv) == 2
    one_line_error(capsys, needle)


def test_a_damaged_run_is_one_line(trained, tmp_path, capsys):
    run = copy_run(trained, tmp_path)
    (run / "config.json").write_text("{not json")
    capsys.readouterr()
    assert main(["sample", str(run), "-o", str(tmp_path / "s.png")]) == 2
    one_line_error(capsys, "config.json")
    run = copy_run(trained, tmp_path / "again")
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        if (run / name).exists():
            (run / name).write_bytes(b"")
    assert main(["sample", str(run), "-o", str(tmp_path / "s.png")]) != 0
    one_line_error(capsys, "checkpoint")


def test_debug_shows_the_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pgm.cli", "--debug", "sample", str(tmp_path / "none"), "-o", "x.png"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_train_help_lists_engines_datasets_and_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "pcd" in out and "8gaussians" in out and "binarized_mnist" in out and "pgm list" in out
    main(["list"])
    listing = capsys.readouterr().out
    rbm = next(line for line in listing.splitlines() if line.startswith("rbm "))
    assert " cd " in rbm and " digits " in rbm and "(its own)" in listing


def test_eval_chooses_a_method_and_says_which(trained, capsys):
    capsys.readouterr()
    assert main(["eval", str(trained), "--limit", "20", "--num-samples", "5"]) == 0
    assert "method: iwae" in capsys.readouterr().out


def test_eval_metric_scores_the_runs_samples(trained, capsys):
    capsys.readouterr()
    assert main(["eval", str(trained), "--metric", "mmd", "--metric", "fd", "--num-draws", "100"]) == 0
    result = json.loads((trained / "eval_metrics.json").read_text())
    assert result["samples"] == 100 and result["fd"] >= 0 and "mmd" in result


# ---------------------------------------------------------------- presets per data set
def test_a_data_set_variant_of_the_preset_is_used_only_for_that_data(monkeypatch):
    from models import registry
    from pgm.cli import _train_settings, build_parser

    base = registry.Preset(settings={"z_dim": 16, "width": 64}, engine="adv", engine_settings={"loss": "ns"},
                           data="digits", data_settings={"binarize": True}, epochs=5, batch_size=64, lr=2e-4,
                           variants={"8gaussians": dict(settings={"z_dim": 2}, engine_settings={"d_steps": 2},
                                                        data_settings={"n": 4000}, epochs=40, lr=1e-3)})
    monkeypatch.setitem(registry._PRESETS, "normal_normal", base)
    parse = build_parser().parse_args
    toys = _train_settings(parse(["train", "normal_normal", "--data", "8gaussians"]), None)
    assert toys["model_settings"] == {"z_dim": 2, "width": 64}
    assert toys["engine_settings"] == {"loss": "ns", "d_steps": 2}
    assert toys["data_settings"] == {"n": 4000}  # the digits' settings do not leak
    assert (toys["epochs"], toys["batch_size"], toys["lr"]) == (40, 64, 1e-3)
    # flags still win over the variant
    flagged = _train_settings(parse(["train", "normal_normal", "--data", "8gaussians", "--epochs", "3",
                                     "--set", "z_dim=3"]), None)
    assert flagged["epochs"] == 3 and flagged["model_settings"]["z_dim"] == 3
    # the preset's own data, and data without a variant, are unchanged / start from no data settings
    own = _train_settings(parse(["train", "normal_normal"]), None)
    assert own["model_settings"] == {"z_dim": 16, "width": 64} and own["data_settings"] == {"binarize": True}
    other = _train_settings(parse(["train", "normal_normal", "--data", "moons"]), None)
    assert other["epochs"] == 5 and other["data_settings"] == {}
    with pytest.raises(TypeError, match=r"variants\['moons'\] has unknown fields \['epoch'\]"):
        registry.Preset(variants={"moons": {"epoch": 3}})
