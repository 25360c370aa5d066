"""`facegan demo RUN`: a web page to play with a trained generator.

A seed slider with its face, a random batch, a truncation slider, an animated walk between two
seeds, and a download link. Served by the standard library's threading HTTP server from one
static page plus four image endpoints: no Gradio (hundreds of MB of dependencies for five
controls) and no extra to install. It binds to 127.0.0.1 unless told otherwise. Imports generate,
never train.
"""

from __future__ import annotations

import io
import json
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
from PIL import Image

from .errors import FaceganError
from .generate import generate, interpolate
from .images import grid_upscale, make_grid

MAX_SEED = 2 ** 31 - 1
MAX_BATCH = 64
MAX_FRAMES = 120
_PAGE = Path(__file__).with_name("demo.html")


IDLE_TIMEOUT_S = 30  # seconds a connection may stay silent


class BadRequest(ValueError):
    pass


def _number(query: dict, name: str, default, low, high, kind=int):
    """Query parameter `name` as an int (or float), within [low, high]; else a BadRequest naming it."""
    try:
        value = kind(query.get(name, [default])[0])
    except ValueError:
        raise BadRequest(f"{name} must be a {'whole number' if kind is int else 'number'}") from None
    if not low <= value <= high:
        raise BadRequest(f"{name} must be between {low} and {high}")
    return value


def _int(query: dict, name: str, default: int, low: int, high: int) -> int:
    return _number(query, name, default, low, high, int)


def _float(query: dict, name: str, default: float, low: float, high: float) -> float:
    return _number(query, name, default, low, high, float)


class FaceServer:
    """The generator behind the page; one forward pass at a time (torch already uses every core)."""

    def __init__(self, generator, info: dict, device="cpu"):
        self.generator, self.info, self.device = generator, info, device
        self.lock = threading.Lock()

    def _png(self, picture: np.ndarray, upscale: int) -> bytes:
        image = Image.fromarray(picture)
        image = image.resize((image.width * upscale, image.height * upscale), Image.NEAREST) if upscale > 1 else image
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()

    def face(self, query) -> bytes:
        seed = _int(query, "seed", 0, 0, MAX_SEED)
        psi = _float(query, "psi", 1.0, 0.0, 1.0)
        with self.lock:
            image = generate(self.generator, [seed], device=self.device, truncation=psi)
        return self._png(image[0], max(1, 256 // image.shape[1]))

    def batch(self, query) -> bytes:
        seed = _int(query, "seed", 0, 0, MAX_SEED - MAX_BATCH)
        count = _int(query, "count", 16, 1, MAX_BATCH)
        psi = _float(query, "psi", 1.0, 0.0, 1.0)
        with self.lock:
            images = generate(self.generator, range(seed, seed + count), device=self.device, truncation=psi)
        return self._png(make_grid(images), grid_upscale(images))

    def walk(self, query) -> bytes:
        seeds = [_int(query, "from", 0, 0, MAX_SEED), _int(query, "to", 1, 0, MAX_SEED)]
        frames = _int(query, "frames", 24, 2, MAX_FRAMES)
        psi = _float(query, "psi", 1.0, 0.0, 1.0)
        with self.lock:
            images = interpolate(self.generator, seeds, frames, self.device, slerp=True, loop=True, truncation=psi)
        upscale = max(1, 256 // images.shape[1])
        pictures = [Image.fromarray(i).resize((i.shape[1] * upscale, i.shape[0] * upscale), Image.NEAREST)
                    for i in images]
        buffer = io.BytesIO()
        pictures[0].save(buffer, format="GIF", save_all=True, append_images=pictures[1:], duration=60, loop=0)
        return buffer.getvalue()


def _handler(faces: FaceServer):
    routes = {"/api/face": (faces.face, "image/png"), "/api/batch": (faces.batch, "image/png"),
              "/api/walk": (faces.walk, "image/gif")}

    class Handler(BaseHTTPRequestHandler):
        timeout = IDLE_TIMEOUT_S  # an idle or stalled connection is closed, and its thread ends

        def handle(self):
            try:
                super().handle()
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                pass  # the browser hung up (a closed tab, a cancelled walk) or went silent: nothing to report

        def do_GET(self):
            url = urlparse(self.path)
            if url.path in ("/", "/index.html"):
                return self._send(HTTPStatus.OK, "text/html; charset=utf-8", _PAGE.read_bytes())
            if url.path == "/api/info":
                return self._send(HTTPStatus.OK, "application/json", json.dumps(faces.info).encode())
            if url.path not in routes:
                return self._send(HTTPStatus.NOT_FOUND, "text/plain", b"not found")
            make, content_type = routes[url.path]
            try:
                body = make(parse_qs(url.query))
            except BadRequest as exc:
                return self._send(HTTPStatus.BAD_REQUEST, "text/plain", str(exc).encode())
            self._send(HTTPStatus.OK, content_type, body)

        def _send(self, status, content_type, body: bytes):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # one line per image request would drown the terminal
            pass

    return Handler


def make_server(generator, info: dict, host: str = "127.0.0.1", port: int = 7860, device="cpu") -> ThreadingHTTPServer:
    """The demo's HTTP server, bound but not yet serving (port 0 picks a free one: server.server_port)."""
    generator.eval()
    if not host.strip():
        raise FaceganError("--host '' would listen on every network interface: pass 0.0.0.0 if you mean that, "
                           "or leave --host out for this machine only (127.0.0.1)")
    try:
        server = ThreadingHTTPServer((host, port), _handler(FaceServer(generator, info, device)))
    except OSError as exc:
        raise FaceganError(f"cannot listen on {host}:{port} ({exc.strerror}): pick another --port "
                           f"(or --port 0 for any free one)") from None
    server.daemon_threads = True
    return server


def serve_checkpoint(checkpoint, host: str, port: int, device, ema: bool = True, log=print) -> None:
    """Serve the demo page for the generator in `checkpoint` until Ctrl-C."""
    from . import checkpoints
    from .generate import generator_from_state, generator_weights
    from .runs import run_of

    state = checkpoints.load(checkpoint)
    generator, cfg = generator_from_state(state, device, ema=ema)
    info = {"run": run_of(checkpoint).path.name, "image_size": cfg.model.image_size, "z_size": cfg.model.noise_size,
            "steps": state.get("step"), "ema": generator_weights(state, ema=ema)[1]}
    server = make_server(generator, info, host, port, device)
    log(f"facegan demo of {checkpoint} at http://{host}:{server.server_port}/ (Ctrl-C stops it)")
    try:
        server.serve_forever()
    finally:
        server.server_close()
