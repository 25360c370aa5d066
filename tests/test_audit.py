"""Skin-tone audit (ITA bands) of data and samples, CelebA attributes, and --balance: measured against
the renderer's known skin tones, on folders, zips and a CelebA-shaped folder the tests write."""

import dataclasses
import json
import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from facegan import checkpoints
from facegan.cli import main
from facegan.config import DataConfig, ModelConfig, TrainConfig, resume_config
from facegan.data import synthetic
from facegan.data.audit import audit, group_labels
from facegan.data.balance import balance_weights
from facegan.data.batches import BatchSource
from facegan.data.prepare import prepare
from facegan.errors import FaceganError
from facegan.skin_tone import BANDS, band_of, band_shares, image_ita, ita, lab, parse_patch
from facegan.train import train

ATTRIBUTES = ["Male", "Smiling", "Eyeglasses"]


def test_ita_of_known_colours_and_the_band_edges():
    # sRGB red is CIELAB (53.24, 80.09, 67.20) under D65: ITA = atan(3.24 / 67.20) = 2.76 degrees.
    np.testing.assert_allclose(lab(np.array([1.0, 0.0, 0.0])), [53.24, 80.09, 67.20], atol=0.05)
    assert float(ita(np.array([1.0, 0.0, 0.0]))) == pytest.approx(2.76, abs=0.05)
    # A pale and a deep skin colour.
    assert band_of(ita(np.array([0.98, 0.85, 0.74]))) == 0
    assert band_of(ita(np.array([0.33, 0.22, 0.15]))) == 5
    # A face exactly at an edge belongs to the lower band (very light is > 55, light 41..55).
    assert list(band_of([55.0, 55.01, 41.0, -30.0, -30.01, 90, -90])) == [1, 0, 2, 5, 5, 0, 5]


def test_renderer_mix_and_its_labels():
    mix = synthetic.parse_skin_mix("8,0,2")
    labels = synthetic.skin_labels(range(4000), skin_mix=mix)
    shares = band_shares(labels)
    assert abs(shares[:2].sum() - 0.8) < 0.03 and shares[2:4].sum() == 0  # light/mid/dark groups: 80/0/20
    # The default set is drawn exactly as before the option existed (its cache key and pixels unchanged).
    assert np.array_equal(synthetic.render_faces(range(8), 16), synthetic.render_faces(range(8), 16, skin_mix=()))
    for bad in ("1,2", "1,-1,1", "a,b,c", "0,0,0"):
        with pytest.raises(FaceganError, match="is not a mix"):
            synthetic.parse_skin_mix(bad)


def test_audit_measures_the_rendered_mix_within_a_few_points(tmp_path):
    """80/20 light/dark faces at 64 px: the audit's light share within 4 points (measured 78.1% on
    4,000 faces), and the band of most faces agrees with the colour the renderer painted."""
    data = DataConfig(num_images=1200, skin_mix="0.8,0,0.2")
    result = audit(data, 64, cache_dir=tmp_path).result
    shares = [band["share"] for band in result["bands"]]
    assert abs(sum(shares[:2]) - 0.8) < 0.04 and abs(sum(shares[4:]) - 0.2) < 0.04, shares
    prepared = prepare(data, 64, cache_dir=tmp_path)
    agree = band_of(image_ita(prepared.images)) == synthetic.skin_labels(range(1200), skin_mix=(0.8, 0, 0.2))
    assert agree.mean() > 0.85
    assert set(result["renderer_truth"]) == set(BANDS)


def _celeba_folder(root, count=12):
    """img_align_celeba/000001.jpg... of flat skin colours (half light, half dark), a list_attr_celeba.txt
    beside the folder as CelebA lays it out, and one unreadable image the cache leaves out."""
    images = root / "img_align_celeba"
    images.mkdir(parents=True)
    rows = []
    for i in range(count):
        colour = (250, 217, 189) if i < count // 2 else (84, 56, 38)
        Image.new("RGB", (40, 48), colour).save(images / f"{i + 1:06d}.jpg", quality=95)
        rows.append(f"{i + 1:06d}.jpg " + " ".join("1" if (i >> k) & 1 else "-1" for k in range(len(ATTRIBUTES))))
    (images / "999999.jpg").write_bytes(b"not a jpeg")
    rows.append("999999.jpg " + " ".join(["-1"] * len(ATTRIBUTES)))
    (root / "list_attr_celeba.txt").write_text(f"{count + 1}\n{' '.join(ATTRIBUTES)}\n" + "\n".join(rows) + "\n")
    return images


def test_audit_of_a_celeba_folder_reports_bands_and_attributes_and_is_cached(tmp_path, capsys):
    images = _celeba_folder(tmp_path / "celeba")
    assert main(["data", "audit", str(images), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "very light" in out and "Smiling" in out and "race" in out  # the note on what ITA is not
    result = json.loads((tmp_path / "out" / "audit.json").read_text())
    assert result["images"] == 12  # the unreadable file is left out, and its attribute row with it
    shares = {band["band"]: band["share"] for band in result["bands"]}
    assert shares["very light"] == 0.5 and shares["dark"] == 0.5
    assert result["attributes"] == {"Male": 0.5, "Smiling": 0.5, "Eyeglasses": 0.3333}
    assert (tmp_path / "out" / "audit.png").stat().st_size > 5000
    assert main(["data", "audit", str(images), "--out", str(tmp_path / "out")]) == 0
    assert "reused the audit" in capsys.readouterr().out
    # A zip of the same images, and attribute-free balance on it.
    archive = tmp_path / "faces.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(images.iterdir()):
            zf.write(path, f"img/{path.name}")
    assert main(["data", "audit", str(archive), "--out", str(tmp_path / "zip")]) == 0
    assert json.loads((tmp_path / "zip" / "audit.json").read_text())["bands"][0]["share"] == 0.5


def test_balance_labels_for_an_attribute_line_up_with_the_prepared_images(tmp_path):
    images = _celeba_folder(tmp_path / "celeba")
    data = DataConfig(source=str(images), balance="Smiling")
    prepared = prepare(data, 32, cache_dir=tmp_path / "cache")
    labels, names = group_labels(data, prepared)
    assert names == ["not Smiling", "Smiling"]
    assert list(labels) == [(i >> 1) & 1 for i in range(12)]


@pytest.mark.parametrize("argv, message", [
    (["data", "audit", "--patch", "0.5,0.5,1.2,0.9"], "outside the image"),
    (["data", "audit", "--patch", "0.1,0.2"], "is not a box"),
    (["data", "audit", "--skin-mix", "1,2"], "is not a mix"),
    (["train", "--balance", "Smiling", "--num-images", "64"], "needs CelebA's list_attr_celeba.txt"),
    (["train", "--balance", "no such!"], "is not a group name"),
])
def test_bad_audit_and_balance_input_is_one_line(argv, message, capsys, tmp_path):
    assert main([*argv, *(["--out", str(tmp_path)] if argv[0] == "train" else [])]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())  # no run folder for a run that cannot start


def test_balance_refuses_data_in_one_band_and_an_unknown_attribute(tmp_path):
    folder = tmp_path / "one-tone"
    folder.mkdir()
    for i in range(4):
        Image.new("RGB", (32, 32), (250, 217, 189)).save(folder / f"{i}.png")
    with pytest.raises(FaceganError, match=r"every image is in one group \(very light\)"):
        train(TrainConfig(data=DataConfig(source=str(folder), balance="skin"), batch_size=2, epochs=1),
              out=tmp_path / "runs", progress=False, log=lambda *a: None)
    assert not (tmp_path / "runs").exists()
    images = _celeba_folder(tmp_path / "celeba")
    data = DataConfig(source=str(images), balance="Young")
    with pytest.raises(FaceganError, match="not an attribute of this data: use skin or one of Male, Smiling"):
        group_labels(data, prepare(data, 32, cache_dir=tmp_path / "cache"))


def test_balanced_draws_even_out_the_groups_and_the_cap_is_said():
    labels = np.array([0] * 900 + [1] * 100)
    weights, line = balance_weights(labels, ["light", "dark"], max_weight=10)
    source = BatchSource(np.zeros((1000, 4, 4, 3), np.uint8), 100, torch.device("cpu"), seed=3, weights=weights)
    drawn = labels[np.concatenate([source.shard(epoch).numpy() for epoch in range(3)])]
    assert abs(drawn.mean() - 0.5) < 0.04  # dark was 10% of the data, now half of the draws
    assert "light 50% (was 90%)" in line and "capped" not in line
    # Two dark images of 1,000: an equal share would repeat each 250x; the cap holds them to 10x.
    labels = np.array([0] * 998 + [1] * 2)
    weights, line = balance_weights(labels, ["light", "dark"], max_weight=10)
    assert weights.max() / weights.min() == pytest.approx(10 / (1000 / (2 * 998)))
    assert "capped at --balance-max-weight 10x: dark (2 images)" in line
    # The global order is the same for any number of processes: ranks take every world_size-th draw.
    one = BatchSource(np.zeros((1000, 4, 4, 3), np.uint8), 50, torch.device("cpu"), seed=3, weights=weights)
    ranks = [BatchSource(np.zeros((1000, 4, 4, 3), np.uint8), 25, torch.device("cpu"), seed=3, weights=weights,
                         rank=r, world_size=2) for r in range(2)]
    merged = torch.stack([ranks[0].shard(1), ranks[1].shard(1)], 1).flatten()
    assert torch.equal(merged, one.shard(1))


def test_balanced_run_resumes_bit_for_bit_and_stores_the_option(tmp_path):
    quiet = dict(progress=False, log=lambda *a: None)
    cfg = TrainConfig(model=ModelConfig(conv_dim=8, z_size=16), batch_size=16, epochs=2, log_every=2, num_samples=4,
                      data=DataConfig(num_images=96, skin_mix="0.85,0.1,0.05", balance="skin"))
    straight = train(cfg, out=tmp_path / "a", **quiet)
    half = train(dataclasses.replace(cfg, epochs=1), out=tmp_path / "b", **quiet)
    last = half / "checkpoints" / "last.pt"
    saved = checkpoints.config_of(checkpoints.load(last))
    assert saved.data.balance == "skin" and saved.data.skin_mix == "0.85,0.1,0.05"
    train(resume_config(saved, {"epochs": 2}), resume_from=last, **quiet)
    a, b = (checkpoints.load(run / "checkpoints" / "last.pt") for run in (straight, half))
    for name, tensor in a["generator"].items():
        assert torch.equal(tensor, b["generator"][name]), name
    for name, tensor in a["discriminator"].items():
        assert torch.equal(tensor, b["discriminator"][name]), name


def test_evaluate_audit_reports_amplification_ratios(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert main(["train", "--conv-dim", "8", "--z-size", "16", "--num-images", "96", "--batch-size", "16",
                 "--epochs", "1", "--num-samples", "4", "--no-progress", "--out", str(runs)]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--runs", str(runs), "--metrics", "audit", "--num-samples", "60"]) == 0
    assert "audit_min_ratio" in capsys.readouterr().out
    (run,) = runs.iterdir()
    row = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]["eval"]
    for band in BANDS:
        if row["audit_data"][band]:
            assert row["audit_ratio"][band] == pytest.approx(row["audit_samples"][band] / row["audit_data"][band],
                                                             abs=2e-3)
    tv = sum(abs(row["audit_samples"][b] - row["audit_data"][b]) for b in BANDS) / 2
    assert row["audit_tv"] == pytest.approx(tv, abs=2e-3)
    assert row["audit_min_band"] == min((b for b in BANDS if row["audit_data"][b] >= 0.02),
                                        key=lambda b: row["audit_data"][b])
    assert (run / "audit.png").is_file() and (run / "audit-samples.png").is_file()


def test_parse_patch_accepts_several_boxes():
    assert parse_patch("0.1,0.2,0.3,0.4;0.5,0.5,0.9,0.9") == ((0.1, 0.2, 0.3, 0.4), (0.5, 0.5, 0.9, 0.9))
