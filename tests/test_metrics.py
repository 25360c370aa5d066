import numpy as np
import pytest
import torch

from facegan.config import DataConfig
from facegan.data.prepare import prepare
from facegan.data.synthetic import render_faces
from facegan.errors import FaceganError
from facegan.losses import make_loss
from facegan.metrics import evaluate as ev
from facegan.metrics.fid import fid, frechet_distance, kid, precision_recall
from facegan.metrics.inception import WEIGHTS_NAME, FIDInceptionV3, load_inception, load_state_dict_strict
from facegan.metrics.msssim import diversity, ms_ssim
from facegan.metrics.swd import swd
from facegan.monitor import Monitor

from conftest import closed_port


def test_frechet_distance_matches_closed_form_for_gaussians():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))  # shared eigenvectors: the closed form is exact
    l1, l2 = rng.uniform(0.5, 3, 6), rng.uniform(0.5, 3, 6)
    s1, s2 = q @ np.diag(l1) @ q.T, q @ np.diag(l2) @ q.T
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(l1) - np.sqrt(l2)) ** 2).sum()
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)
    # One-dimensional sanity: N(0, 1) vs N(3, 4) -> 9 + (1 - 2)^2 = 10.
    assert frechet_distance([0.0], [[1.0]], [3.0], [[4.0]]) == pytest.approx(10.0)


def test_fid_of_a_set_with_itself_is_zero_and_small_sets_do_not_fail():
    x = np.random.default_rng(1).normal(size=(300, 16))
    with pytest.warns(UserWarning, match="fewer than 2048"):
        assert abs(fid(x, x)) < 1e-6
    few = np.random.default_rng(2).normal(size=(10, 64))  # rank-deficient covariances
    with pytest.warns(UserWarning):
        value = fid(few, few + 0.5)
    assert np.isfinite(value) and value > 0


def test_kid_is_unbiased_on_equal_distributions_and_positive_on_different():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(400, 32)), rng.normal(size=(400, 32))
    same, spread = kid(a, b, num_subsets=20, subset_size=200)
    assert abs(same) < 3 * spread + 1e-3
    shifted, _ = kid(a, b + 1.0, num_subsets=20, subset_size=200)
    assert shifted > 10 * abs(same)


def test_precision_recall_extremes():
    rng = np.random.default_rng(4)
    real = rng.normal(size=(200, 8))
    assert precision_recall(real, real.copy()) == (1.0, 1.0)
    precision, recall = precision_recall(real, real + 100)
    assert precision == 0.0 and recall == 0.0
    # Fakes covering only half the real modes: high precision, lower recall.
    half = real[real[:, 0] > 0]
    precision, recall = precision_recall(real, half)
    assert precision > 0.9 and recall < 0.75


def _blur(images):
    from PIL import Image, ImageFilter
    return np.stack([np.asarray(Image.fromarray(i).filter(ImageFilter.GaussianBlur(1.5))) for i in images])


def test_swd_is_smaller_for_closer_sets_and_deterministic():
    sharp_a = render_faces(range(0, 64), size=32)
    sharp_b = render_faces(range(64, 128), size=32)
    blurred_b = _blur(sharp_b)
    close, far = swd(sharp_a, sharp_b), swd(sharp_a, blurred_b)
    assert set(close["levels"]) == {32, 16}
    assert close["avg"] < far["avg"]
    assert close["levels"][32] < far["levels"][32]  # blur shows most in the finest band
    assert swd(sharp_a, sharp_b) == close


def test_ms_ssim_identity_and_diversity():
    faces = render_faces(range(16), size=32)
    tensor = torch.from_numpy(faces).permute(0, 3, 1, 2).double()
    assert torch.allclose(ms_ssim(tensor, tensor), torch.ones(16, dtype=torch.double))
    assert ms_ssim(tensor[:8], tensor[8:]).max() < 0.9
    assert diversity(np.repeat(faces[:1], 8, axis=0), pairs=20) == pytest.approx(1.0)
    assert diversity(faces, pairs=50) < 0.6


# --- Inception ---------------------------------------------------------------------------------
# torchvision documents Inception3 at 27,161,264 parameters (1000 classes, aux head). The FID graph
# drops the aux head (3,326,696) and has 1008 classes (+8 x 2049): 23,850,960. An independent check
# that the port has every layer at the right size.
FID_INCEPTION_PARAMETERS = 23_850_960
KNOWN_SHAPES = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_4a_3x3.bn.running_var": (192,),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
    "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
    "Mixed_7a.branch3x3_2.conv.weight": (320, 192, 3, 3),
    "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
    "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
    "fc.weight": (1008, 2048),
}


@pytest.fixture(scope="module")
def inception():
    torch.manual_seed(0)
    return FIDInceptionV3()


def test_inception_layout_matches_the_fid_weights_file(inception):
    assert sum(p.numel() for p in inception.parameters()) == FID_INCEPTION_PARAMETERS
    state = inception.state_dict()
    for key, shape in KNOWN_SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    weights = [k for k in state if not k.endswith("num_batches_tracked")]
    assert len(weights) == 94 * 5 + 2  # 94 conv+BatchNorm units, and fc
    with open(__file__.replace("test_metrics.py", "data/fid_inception_keys.txt")) as f:
        manifest = [line.split() for line in f.read().splitlines() if line and not line.startswith("#")]
    assert [(k, tuple(int(d) for d in s.split("x"))) for k, s in manifest] == \
        [(k, tuple(state[k].shape)) for k in weights]


def test_inception_gives_2048_features_in_eval_mode_and_loads_strictly(inception):
    assert not inception.training
    features = inception(torch.rand(2, 3, 64, 64))
    assert features.shape == (2, 2048) and torch.isfinite(features).all()
    # The weights file lacks num_batches_tracked (older PyTorch): that alone is accepted.
    state = {k: v.clone() for k, v in inception.state_dict().items() if not k.endswith("num_batches_tracked")}
    other = FIDInceptionV3()
    load_state_dict_strict(other, state)
    assert torch.equal(other.Mixed_7c.branch_pool.conv.weight, inception.Mixed_7c.branch_pool.conv.weight)
    state["Mixed_7c.extra"] = torch.zeros(1)
    with pytest.raises(FaceganError, match="do not fit"):
        load_state_dict_strict(other, state)


def test_missing_or_wrong_inception_weights_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    # "Offline": the standard URL replaced by a loopback port nobody listens on.
    monkeypatch.setattr("facegan.metrics.inception.WEIGHTS_URL", f"http://127.0.0.1:{closed_port()}/{WEIGHTS_NAME}")
    with pytest.raises(FaceganError, match=f"{WEIGHTS_NAME}.*could not be downloaded.*--inception-weights.*"
                                           f"swd and msssim need no download"):
        load_inception()
    fake = tmp_path / WEIGHTS_NAME
    fake.write_bytes(b"not the weights")
    with pytest.raises(FaceganError, match="is not the FID Inception weights file"):
        load_inception(fake)


def test_inception_weights_are_downloaded_into_the_hub_cache_and_checked(tmp_path, monkeypatch):
    from test_download import Server

    server = Server()
    try:
        server.routes[f"/{WEIGHTS_NAME}"] = ("application/octet-stream", b"not the real weights", "")
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
        monkeypatch.setattr("facegan.metrics.inception.WEIGHTS_URL", f"{server.url}/{WEIGHTS_NAME}")
        with pytest.raises(FaceganError, match="is not the FID Inception weights file"):
            load_inception()
        assert any(path == f"/{WEIGHTS_NAME}" for path, _ in server.requests)  # it did try the URL
        assert not (tmp_path / "torch" / "hub" / "checkpoints" / WEIGHTS_NAME).exists()  # and dropped the bad file
    finally:
        server.httpd.shutdown()
        server.httpd.server_close()


def test_evaluate_caches_reference_statistics_per_dataset(tmp_path, monkeypatch, inception):
    from facegan.config import ModelConfig
    from facegan.models import Generator

    monkeypatch.setattr("facegan.metrics.inception.load_inception", lambda *a, **k: inception)
    generator = Generator(ModelConfig(conv_dim=8, z_size=16)).eval()
    data = prepare(DataConfig(num_images=40), 32, cache_dir=tmp_path)
    results = ev.evaluate(generator, data, ["swd", "msssim", "fid", "kid", "pr"], num_samples=12, cache_dir=tmp_path)
    assert {"swd", "msssim", "msssim_real", "fid", "kid", "precision", "recall"} <= set(results)
    assert results["fid"] >= 0 and "fid_note" in results  # random weights: degenerate features, FID ~0
    stats = sorted((tmp_path / "stats").glob("*.npz"))
    assert len(stats) == 2  # msssim reference and Inception features
    stamps = [p.stat().st_mtime_ns for p in stats]
    assert ev.evaluate(generator, data, ["msssim", "fid"], num_samples=12, cache_dir=tmp_path)["fid"] == results["fid"]
    assert [p.stat().st_mtime_ns for p in stats] == stamps  # reused, not recomputed
    other = prepare(DataConfig(num_images=40, render_seed=1), 32, cache_dir=tmp_path)
    ev.evaluate(generator, other, ["msssim"], num_samples=12, cache_dir=tmp_path)
    assert len(list((tmp_path / "stats").glob("*.npz"))) == 3  # other data, other statistics
    ev.evaluate(generator, data, ["msssim"], num_samples=10, cache_dir=tmp_path)
    assert len(list((tmp_path / "stats").glob("*.npz"))) == 4  # other settings, other statistics


def test_monitor_alerts():
    monitor = Monitor(make_loss("bce", 0.9))
    floor = make_loss("bce", 0.9).d_loss_floor()
    assert floor == pytest.approx(0.325, abs=1e-3)
    ok = {"step": 1, "loss_d": 1.0, "loss_g": 1.0, "d_real": 0.6, "d_fake": 0.4}
    assert monitor.check_losses(ok) == []
    assert "NaN" in monitor.check_losses({**ok, "loss_g": float("nan")})[0]
    assert "collapsed" in monitor.check_losses({**ok, "loss_d": floor + 0.001})[0]
    assert monitor.check_losses({**ok, "loss_d": floor + 0.001}) == []  # not repeated every window
    assert monitor.check_diversity(0.30, 0.25, 10) == []
    assert "losing diversity" in monitor.check_diversity(0.80, 0.25, 20)[0]
    # hinge: G's loss is linear in D's output, a D at zero loss does not starve it
    assert Monitor(make_loss("hinge", 0.9)).check_losses({**ok, "loss_d": 0.001}) == []
    assert "collapsed" in Monitor(make_loss("lsgan", 1.0)).check_losses({**ok, "loss_d": 0.001})[0]


def test_unknown_metric_is_a_clear_error():
    with pytest.raises(FaceganError, match="unknown metric"):
        ev.parse_metrics("swd,inception_score")
