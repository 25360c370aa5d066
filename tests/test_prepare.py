import json

import numpy as np
import pytest
from PIL import Image

from facegan.config import DataConfig
from facegan.data.prepare import decode_image, prepare, summary
from facegan.errors import FaceganError

from conftest import face_like, write_image_folder, write_image_zip


def test_folder_of_mixed_files_is_decoded_and_corrupt_ones_counted(tmp_path):
    folder = write_image_folder(tmp_path / "faces")
    prepared = prepare(DataConfig(source=str(folder)), 32, cache_dir=tmp_path / "cache")
    assert prepared.images.shape == (6, 32, 32, 3) and prepared.images.dtype == np.uint8
    assert prepared.record["found"] == 7 and prepared.record["skipped"] == 1  # broken.jpg; notes.txt ignored
    assert "6 of 7 images" in summary(prepared) and "1 unreadable skipped" in summary(prepared)


def test_zip_is_read_without_extracting_and_skips_resource_forks(tmp_path):
    archive = write_image_zip(tmp_path / "faces.zip", count=5)
    prepared = prepare(DataConfig(source=str(archive)), 32, cache_dir=tmp_path / "cache")
    assert prepared.record["found"] == 6 and len(prepared.images) == 5


def test_second_prepare_reuses_the_cache_and_a_change_rebuilds_it(tmp_path):
    folder = write_image_folder(tmp_path / "faces")
    data = DataConfig(source=str(folder))
    first = prepare(data, 32, cache_dir=tmp_path / "cache")
    second = prepare(data, 32, cache_dir=tmp_path / "cache")
    assert not first.reused and second.reused
    assert np.array_equal(first.images, second.images)
    face_like(99).save(folder / "new.png")
    third = prepare(data, 32, cache_dir=tmp_path / "cache")
    assert not third.reused and len(third.images) == 7
    assert not prepare(data, 64, cache_dir=tmp_path / "cache").reused  # other size, other cache


def test_truncated_or_tampered_cache_is_rebuilt_not_used(tmp_path):
    data = DataConfig(num_images=20)
    first = prepare(data, 32, cache_dir=tmp_path)
    expected = np.array(first.images)
    with open(first.path, "r+b") as f:  # an interrupted write: the file lost its tail
        f.truncate(first.path.stat().st_size - 100)
    rebuilt = prepare(data, 32, cache_dir=tmp_path)
    assert not rebuilt.reused and np.array_equal(rebuilt.images, expected)
    with open(rebuilt.path, "r+b") as f:  # same size, different bytes
        f.seek(10)
        f.write(b"\x00\x01\x02")
    assert not prepare(data, 32, cache_dir=tmp_path).reused


def test_interrupted_preparation_leaves_no_valid_cache(tmp_path, monkeypatch):
    import facegan.data.prepare as prep

    def explode(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(prep, "_decode_chunk", explode)
    with pytest.raises(KeyboardInterrupt):
        prepare(DataConfig(num_images=10), 32, cache_dir=tmp_path)
    assert not list(tmp_path.glob("*.json")) and not list(tmp_path.glob("*.tmp*"))


def test_decode_crops_centre_converts_modes_and_upscales(tmp_path):
    image = np.zeros((200, 100, 3), np.uint8)
    image[50:150] = 255  # a white centre square in a tall black picture
    Image.fromarray(image).save(tmp_path / "tall.png")
    out = decode_image(str(tmp_path / "tall.png"), 32)
    assert out.shape == (32, 32, 3) and out.mean() > 250  # centre square crop keeps only white
    Image.fromarray(image).convert("L").save(tmp_path / "gray.png")
    assert decode_image(str(tmp_path / "gray.png"), 64).shape == (64, 64, 3)  # upscaled, RGB
    # A 50-pixel crop of the white square's middle is all white even though the picture is not.
    Image.fromarray(np.pad(np.full((60, 60, 3), 255, np.uint8), ((70, 70), (70, 70), (0, 0)))).save(tmp_path / "p.png")
    assert decode_image(str(tmp_path / "p.png"), 32, crop=50).min() == 255
    assert decode_image(str(tmp_path / "p.png"), 32, crop=0).min() == 0


def test_jpeg_draft_decoding_matches_full_decoding_closely(tmp_path):
    blocks = np.random.default_rng(0).integers(0, 255, (11, 9, 3))
    big = Image.fromarray(np.kron(blocks, np.ones((20, 20, 1))).astype(np.uint8))
    big.save(tmp_path / "big.jpg", quality=95)  # 180x220, like CelebA
    fast = decode_image(str(tmp_path / "big.jpg"), 32, crop=178).astype(float)
    with Image.open(tmp_path / "big.jpg") as img:
        img = img.convert("RGB")
        slow = np.asarray(img.resize((32, 32), Image.LANCZOS, box=(1, 21, 179, 199))).astype(float)
    assert np.abs(fast - slow).mean() < 6


def make_bad_source(root, kind):
    if kind == "missing":
        return root / "missing"
    if kind in ("empty", "no-images"):
        (root / kind).mkdir()
        if kind == "no-images":
            (root / kind / "a.txt").write_text("x")
        return root / kind
    (root / "file.bin").write_bytes(b"x")
    return root / "file.bin"


@pytest.mark.parametrize("kind,message", [("missing", "does not exist"), ("empty", "is empty"),
                                          ("no-images", "has no images"), ("other", "neither a folder nor a .zip")])
def test_bad_sources_are_one_clear_sentence(tmp_path, kind, message):
    with pytest.raises(FaceganError, match=message):
        prepare(DataConfig(source=str(make_bad_source(tmp_path, kind))), 32, cache_dir=tmp_path / "cache")


def test_all_corrupt_images_is_a_clear_error(tmp_path):
    (tmp_path / "bad").mkdir()
    for i in range(3):
        (tmp_path / "bad" / f"{i}.jpg").write_bytes(b"nope")
    with pytest.raises(FaceganError, match="none of the 3 images .* could be read"):
        prepare(DataConfig(source=str(tmp_path / "bad")), 32, cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache").glob("*.json"))


def test_renderer_source_records_what_it_is(tmp_path):
    prepared = prepare(DataConfig(num_images=12, render_seed=4), 32, cache_dir=tmp_path)
    record = json.loads(prepared.path.with_suffix(".json").read_text())
    assert record["used"] == 12 and "seed 4" in record["source"] and record["checksum"]
