"""Issue 9: bad input gets one clear line, never a traceback, and nothing already written is lost."""

import json

import torch
from PIL import Image

from facegan import checkpoints
from facegan.cli import main

TINY = ["--conv-dim", "8", "--z-size", "16", "--num-images", "48", "--batch-size", "16", "--log-every", "1",
        "--num-samples", "4", "--no-progress"]


def one_line_error(capsys, *argv) -> str:
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def trained_run(tmp_path):
    runs = tmp_path / "runs"
    assert main([*map(str, ["train", *TINY, "--epochs", "1", "--out", runs])]) == 0
    (run,) = runs.iterdir()
    return run


def test_empty_and_random_checkpoints(tmp_path, capsys):
    empty, noise = tmp_path / "e.pt", tmp_path / "r.pt"
    empty.write_bytes(b"")
    noise.write_bytes(bytes(range(256)) * 8)
    assert "is empty (0 bytes)" in one_line_error(capsys, "generate", empty)
    assert "is empty (0 bytes)" in one_line_error(capsys, "train", "--resume", empty)
    err = one_line_error(capsys, "generate", noise)
    assert "not a facegan checkpoint" in err and "code" not in err


def test_resume_from_a_generator_snapshot_names_the_file_that_can(tmp_path, capsys):
    run = trained_run(tmp_path)
    err = one_line_error(capsys, "train", "--resume", run / "generator.pt", "--epochs", "2")
    assert "generator snapshot, which cannot resume" in err and "checkpoints/last.pt" in err


def test_damaged_checkpoints_are_named_not_traced(tmp_path, capsys):
    run = trained_run(tmp_path)
    state = checkpoints.load(run / "checkpoints" / "last.pt")
    wrong = dict(state, generator={k: v[..., :1] if v.ndim else v for k, v in state["generator"].items()})
    torch.save(wrong, tmp_path / "wrong.pt")
    assert "do not match the model" in one_line_error(capsys, "train", "--resume", tmp_path / "wrong.pt",
                                                      "--epochs", "2")
    del state["config"]
    torch.save(state, tmp_path / "no-config.pt")
    for command in (["generate"], ["train", "--resume"]):
        assert "is damaged: it lacks config" in one_line_error(capsys, *command, tmp_path / "no-config.pt")


def test_a_one_image_data_set_trains(tmp_path, capsys):
    folder = tmp_path / "one"
    folder.mkdir()
    Image.new("RGB", (40, 40), (200, 120, 90)).save(folder / "face.png")
    runs = tmp_path / "runs"
    assert main(["train", "--data", str(folder), "--batch-size", "16", "--num-samples", "16", "--conv-dim", "8",
                 "--epochs", "2", "--no-progress", "--out", str(runs)]) == 0
    (run,) = runs.iterdir()
    assert checkpoints.load(run / "checkpoints" / "last.pt")["step"] == 2


def test_a_torn_metrics_line_does_not_block_resume(tmp_path, capsys):
    run = trained_run(tmp_path)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 3, "loss_d": 0.5, "los')  # a kill mid-write
    assert main(["train", "--resume", str(run), "--epochs", "2", "--no-progress"]) == 0
    assert "dropped a partial last line" in capsys.readouterr().out
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 6


def test_unwritable_output_is_one_line(tmp_path, capsys):
    run = trained_run(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert "cannot use" in one_line_error(capsys, "generate", run, "--out", blocker / "x.png")
    assert "cannot use" in one_line_error(capsys, "generate", run, "--outdir", blocker / "faces")


def test_config_file_values_of_the_wrong_type_name_the_key(tmp_path, capsys):
    for raw, named in (({"lr_d": "x"}, "'lr_d' must be a number"), ({"model": {"conv_dim": 1.5}}, "'model.conv_dim'"),
                       ({"data": "faces"}, "'data' must be a section"), ([1, 2], "a JSON object")):
        path = tmp_path / "c.json"
        path.write_text(json.dumps(raw))
        assert named in one_line_error(capsys, "train", "--config", path)
    assert "finite" in one_line_error(capsys, "train", "--lr", "inf")


def test_a_model_too_large_for_memory_is_refused_before_anything_is_written(tmp_path, capsys):
    err = one_line_error(capsys, "train", "--conv-dim", "100000", "--out", tmp_path / "runs")
    assert "parameters and needs" in err and "lower --conv-dim" in err
    assert not (tmp_path / "runs").exists()


def test_runs_started_at_once_take_different_numbers(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from facegan.runs import new_run

    with ThreadPoolExecutor(8) as pool:
        runs = list(pool.map(lambda _: new_run(tmp_path, "faces32").path.name, range(16)))
    assert sorted(runs) == [f"{i:05d}-faces32" for i in range(16)]
