"""Shared fixtures: an isolated data cache per test session, and image files the tests write."""

import io
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def pytest_configure(config):
    # Module-scoped fixtures run before any function fixture: give them a throwaway cache too,
    # so no test ever writes to the user's ~/.cache/facegan.
    os.environ["FACEGAN_CACHE"] = tempfile.mkdtemp(prefix="facegan-test-cache-")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Every test prepares data into its own cache, never the user's ~/.cache/facegan, so no test
    sees another's prepared data or registered downloads."""
    monkeypatch.setenv("FACEGAN_CACHE", str(tmp_path_factory.mktemp("cache")))


def tiny_train_config(**overrides):
    """A TrainConfig that trains in a second: 96 built-in faces, batch 16 (6 steps an epoch), 2 epochs."""
    from facegan.config import DataConfig, ModelConfig, TrainConfig
    base = {"model": ModelConfig(conv_dim=8, z_size=16), "data": DataConfig(num_images=96), "batch_size": 16,
            "epochs": 2, "log_every": 2, "num_samples": 4}
    return TrainConfig(**{**base, **overrides})


def killed_copy(run, dest, epoch: int = 1):
    """A copy of a finished run as a kill right after `epoch` would have left it: last.pt, the snapshot
    and every later epoch checkpoint deleted, so a resume that did nothing cannot pass a comparison
    with the run that went straight through. Returns the epoch checkpoint to resume from."""
    shutil.copytree(run, dest)
    checkpoints = dest / "checkpoints"
    for path in checkpoints.glob("*.pt"):
        if path.name == "last.pt" or (path.name.startswith("epoch-") and int(path.stem[6:]) > epoch):
            path.unlink()
    (dest / "generator.pt").unlink(missing_ok=True)
    return checkpoints / f"epoch-{epoch:04d}.pt"


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then closed at once): 'offline' without the network."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def face_like(seed: int, size=(40, 48)) -> Image.Image:
    """A small RGB picture with structure (so resizing and cropping are visible)."""
    rng = np.random.default_rng(seed)
    array = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    array[size[1] // 4: 3 * size[1] // 4, size[0] // 4: 3 * size[0] // 4] = (200, 150, 120)
    return Image.fromarray(array)


def write_image_folder(root, count=6):
    """A nested folder of mixed formats and modes, plus one corrupt file and one non-image."""
    (root / "a" / "b").mkdir(parents=True)
    face_like(0).save(root / "one.png")
    face_like(1).save(root / "a" / "two.jpg", quality=95)
    face_like(2).convert("L").save(root / "a" / "gray.png")
    face_like(3).convert("RGBA").save(root / "a" / "b" / "rgba.png")
    face_like(4).convert("P").save(root / "a" / "b" / "palette.bmp")
    face_like(5).save(root / "a" / "b" / "five.webp")
    for i in range(6, count):
        face_like(i).save(root / f"extra{i}.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (root / "notes.txt").write_text("not an image")
    return root


def write_image_zip(path, count=5):
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(count):
            buffer = io.BytesIO()
            face_like(i).save(buffer, format="PNG")
            archive.writestr(f"img_align/{i:06d}.png", buffer.getvalue())
        archive.writestr("img_align/bad.jpg", b"garbage")
        archive.writestr("__MACOSX/img_align/._000000.png", b"resource fork")
    return path


CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="session")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[test]')")
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("Debian's chromium and chromium-driver are not installed (.ci/run installs them with apt-get)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1400,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory):
    """A throw-away PostgreSQL cluster on a Unix socket (initdb + pg_ctl), stopped after the session; its URL.

    PostgreSQL refuses to run as root, so as root the cluster runs as the `postgres` user Debian's package
    makes. Skips, saying why, where the server programs are missing (.ci/run installs them with apt-get)."""
    import pwd
    import subprocess

    pytest.importorskip("psycopg2", reason="the PostgreSQL driver is not installed (pip install -e '.[study]')")
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if not (initdb and pg_ctl):
        candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if candidates:
            initdb, pg_ctl = str(candidates[-1]), str(candidates[-1].with_name("pg_ctl"))
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL's initdb/pg_ctl are not installed (.ci/run installs Debian's postgresql)")
    root = Path(tempfile.mkdtemp(prefix="facegan-pg-"))
    run_as = []
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the PostgreSQL server as")
        os.chown(root, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", closed_port()
    subprocess.run([*run_as, initdb, "-D", str(data), "-U", "facegan", "--auth", "trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    options = f"-k {root} -p {port} -c listen_addresses=''"
    subprocess.run([*run_as, pg_ctl, "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start"],
                   check=True, capture_output=True)
    try:
        subprocess.run([*run_as, str(Path(initdb).resolve().with_name("createdb")), "-h",
                        str(root), "-p", str(port), "-U", "facegan", "studies"], check=True, capture_output=True)
        yield f"postgresql+psycopg2://facegan@/studies?host={root}&port={port}"
    finally:
        subprocess.run([*run_as, pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def child_pids(pid: int) -> list[int]:
    """The processes `pid` started and that are still its children (Linux /proc)."""
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def process_running(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False
