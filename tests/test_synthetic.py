import numpy as np
import pytest

from facegan.data.synthetic import render_faces


def test_same_seed_same_faces_any_chunking():
    whole = render_faces(range(20), size=32, seed=3)
    assert np.array_equal(whole, render_faces(range(20), size=32, seed=3, chunk=7))
    assert np.array_equal(whole[11:14], render_faces([11, 12, 13], size=32, seed=3))


def test_different_seeds_and_indices_differ():
    a, b = render_faces(range(8), size=32, seed=0), render_faces(range(8), size=32, seed=1)
    assert not np.array_equal(a, b)
    # Faces within a set are not copies of each other.
    flat = a.reshape(8, -1).astype(np.int32)
    assert min(np.abs(flat[i] - flat[j]).mean() for i in range(8) for j in range(i)) > 5


@pytest.mark.parametrize("size", [32, 64, 128])
def test_any_resolution_uint8_rgb(size):
    faces = render_faces(range(3), size=size)
    assert faces.shape == (3, size, size, 3) and faces.dtype == np.uint8


def test_face_is_centred_and_skin_toned():
    # Across many faces, the centre of the picture (the face) is warmer than blue on average.
    faces = render_faces(range(64), size=32).astype(np.float32)
    centre = faces[:, 12:20, 12:20].mean(axis=(0, 1, 2))
    assert centre[0] > centre[2] + 20  # red channel dominates skin of every tone
    assert faces.std(axis=0).mean() > 20  # and the set varies
