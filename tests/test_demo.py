"""The web demo: its endpoints over HTTP, and the page in a real browser (Debian's chromium driven by
selenium; skipped, saying why, where either is missing)."""

import threading
import urllib.error
import urllib.request

import pytest

from facegan.config import DataConfig, ModelConfig, TrainConfig
from facegan.demo import make_server
from facegan.generate import load_generator
from facegan.train import train


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    cfg = TrainConfig(model=ModelConfig(conv_dim=8, z_size=16), data=DataConfig(num_images=64), batch_size=16,
                      epochs=1, num_samples=4)
    run = train(cfg, out=tmp_path_factory.mktemp("runs"), progress=False, log=lambda *a: None)
    generator, _ = load_generator(run / "generator.pt")
    server = make_server(generator, {"run": run.name, "image_size": 32, "z_size": 16, "steps": 4, "ema": False},
                         port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def fetch(url):
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.headers["Content-Type"], response.read()


def test_endpoints_serve_images_and_refuse_bad_parameters(server):
    status, kind, body = fetch(server + "/api/face?seed=3&psi=0.7")
    assert status == 200 and kind == "image/png" and body.startswith(b"\x89PNG")
    assert fetch(server + "/api/face?seed=3&psi=0.7")[2] == body          # same seed, same face
    assert fetch(server + "/api/face?seed=4&psi=0.7")[2] != body
    assert fetch(server + "/api/walk?from=1&to=2&frames=4")[2].startswith(b"GIF8")
    assert fetch(server + "/api/batch?seed=10&count=4")[1] == "image/png"
    assert b"facegan demo" in fetch(server + "/")[2]
    for bad in ("/api/face?seed=-1", "/api/face?psi=2", "/api/batch?count=1000", "/api/walk?frames=x"):
        with pytest.raises(urllib.error.HTTPError) as error:
            fetch(server + bad)
        assert error.value.code == 400
    with pytest.raises(urllib.error.HTTPError) as error:
        fetch(server + "/nothing-here")
    assert error.value.code == 404


def test_demo_binds_to_loopback_by_default():
    import inspect
    assert inspect.signature(make_server).parameters["host"].default == "127.0.0.1"


def _loaded(driver, element_id):
    return driver.execute_script(f"const i = document.getElementById('{element_id}'); "
                                 f"return i.complete && i.naturalWidth > 0 ? i.naturalWidth : 0;")


def _pixels(driver, element_id):
    """The image's pixels as a data URL, read back through a canvas."""
    return driver.execute_script(
        f"const i = document.getElementById('{element_id}'); const c = document.createElement('canvas');"
        f"c.width = i.naturalWidth; c.height = i.naturalHeight; c.getContext('2d').drawImage(i, 0, 0);"
        f"return c.toDataURL();")


def test_page_in_a_real_browser_slider_batch_walk_download(server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    browser.get(server + "/")
    wait.until(lambda d: _loaded(d, "face") == 256 and d.find_element(By.ID, "face").get_attribute("data-seed") == "0")
    wait.until(lambda d: "4 training steps" in d.find_element(By.ID, "info").text)
    before = _pixels(browser, "face")

    browser.find_element(By.ID, "seed").send_keys(Keys.ARROW_RIGHT)   # a person nudging the slider
    wait.until(lambda d: d.find_element(By.ID, "face").get_attribute("data-seed") == "1" and _loaded(d, "face"))
    assert browser.find_element(By.ID, "seed-value").text == "1"
    assert _pixels(browser, "face") != before                            # a new face arrived
    link = browser.find_element(By.ID, "download")
    assert link.get_attribute("download") == "face-seed1.png" and "seed=1" in link.get_attribute("href")

    wait.until(lambda d: _loaded(d, "batch"))
    first_batch = browser.find_element(By.ID, "batch").get_attribute("src")
    browser.find_element(By.ID, "random-batch").click()
    wait.until(lambda d: d.find_element(By.ID, "batch").get_attribute("src") != first_batch and _loaded(d, "batch"))

    browser.find_element(By.ID, "to").clear()
    browser.find_element(By.ID, "to").send_keys("7")
    browser.find_element(By.ID, "interpolate").click()
    wait.until(lambda d: "to=7" in d.find_element(By.ID, "walk").get_attribute("src") and _loaded(d, "walk"))
    assert browser.find_element(By.ID, "status").text == ""              # no request failed
    browser.save_screenshot(str(tmp_path / "demo.png"))


def test_a_silent_client_is_dropped_and_a_hang_up_prints_no_traceback(monkeypatch, capsys):
    import socket
    import struct
    import time

    from facegan import demo
    from facegan.models import build_models

    monkeypatch.setattr(demo, "IDLE_TIMEOUT_S", 0.5)
    generator, _ = build_models(ModelConfig(conv_dim=8, z_size=16))
    server = make_server(generator, {"run": "t", "image_size": 32, "z_size": 16, "steps": 0, "ema": False}, port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        silent = socket.create_connection(("127.0.0.1", server.server_port))
        silent.settimeout(10)
        started = time.monotonic()
        assert silent.recv(1) == b""  # closed by the server, not left hanging (that would raise socket.timeout)
        assert time.monotonic() - started < 5
        silent.close()
        for _ in range(3):  # ask for a walk, then reset the connection before the answer is written
            rude = socket.create_connection(("127.0.0.1", server.server_port))
            rude.sendall(b"GET /api/walk?from=1&to=2&frames=48 HTTP/1.1\r\nHost: x\r\n\r\n")
            rude.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            rude.close()
        time.sleep(2)
        assert fetch(f"http://127.0.0.1:{server.server_port}/api/face?seed=1")[0] == 200  # still serving
    finally:
        server.shutdown()
        server.server_close()
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Exception occurred" not in err, err[-2000:]
