"""Downloads against a real HTTP server on 127.0.0.1, started by the tests; safe unzip on crafted archives."""

import dataclasses
import hashlib
import stat
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from facegan.config import DataConfig
from facegan.data import download as dl
from facegan.data.prepare import prepare
from facegan.errors import FaceganError

from conftest import closed_port, write_image_zip


class Server:
    """Routes: path -> (content type, body, mode). Records the headers of every request."""

    def __init__(self):
        self.routes, self.requests = {}, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                outer.requests.append((self.path, dict(self.headers)))
                route = outer.routes.get(self.path.split("?")[0])
                if route is None:
                    self.send_error(404, "Not Found")
                    return
                kind, body, mode = route
                if mode == "confirm" and "confirm=" not in self.path:
                    kind, body = "text/html; charset=utf-8", outer.confirm_page
                start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
                if mode == "no-range":
                    start = 0
                self.send_response(206 if start else 200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body) - start))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.end_headers()
                if mode == "drop-once":
                    outer.routes[self.path.split("?")[0]] = (kind, body, "")
                    self.wfile.write(body[start:start + (len(body) - start) // 2])
                    self.wfile.flush()
                    self.connection.close()  # the connection dies half way
                    return
                self.wfile.write(body[start:])

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.confirm_page = (f'<html><form id="download-form" action="{self.url}/uc" method="get">'
                             '<input type="hidden" name="id" value="abc"><input type="hidden" name="confirm" value="t">'
                             '</form>Google Drive can\'t scan this file for viruses.</html>').encode()
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server():
    s = Server()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


@pytest.fixture
def zip_bytes(tmp_path):
    return write_image_zip(tmp_path / "src.zip", count=4).read_bytes()


def test_download_unzips_registers_and_trains_by_name(server, zip_bytes, tmp_path):
    server.routes["/celeba.zip"] = ("application/zip", zip_bytes, "")
    folder = dl.download("celeba-small", tmp_path / "data", url=server.url + "/celeba.zip", progress=False,
                         log=lambda *a: None)
    assert folder == (tmp_path / "data" / "celeba-small").resolve()
    assert len(list(folder.rglob("*.png"))) == 4
    assert not list((tmp_path / "data").glob("*.part"))
    prepared = prepare(DataConfig(source="celeba-small"), 32, cache_dir=tmp_path / "cache")
    assert len(prepared.images) == 4
    # A second call finds it done and downloads nothing.
    before = len(server.requests)
    dl.download("celeba-small", tmp_path / "data", url=server.url + "/celeba.zip", progress=False, log=lambda *a: None)
    assert len(server.requests) == before


def test_interrupted_download_resumes_with_range(server, zip_bytes, tmp_path):
    server.routes["/big.zip"] = ("application/zip", zip_bytes, "drop-once")
    target = tmp_path / "big.zip"
    with pytest.raises(FaceganError, match="run the same command again to continue"):
        dl.fetch(server.url + "/big.zip", target, progress=False)
    part = tmp_path / "big.zip.part"
    assert 0 < part.stat().st_size < len(zip_bytes)
    dl.fetch(server.url + "/big.zip", target, progress=False)
    assert target.read_bytes() == zip_bytes
    assert server.requests[-1][1].get("Range") == f"bytes={len(zip_bytes) // 2}-"


def test_server_without_range_support_restarts_cleanly(server, zip_bytes, tmp_path):
    server.routes["/f.zip"] = ("application/zip", zip_bytes, "no-range")
    (tmp_path / "f.zip.part").write_bytes(zip_bytes[:100])
    dl.fetch(server.url + "/f.zip", tmp_path / "f.zip", progress=False)
    assert (tmp_path / "f.zip").read_bytes() == zip_bytes


def test_wrong_checksum_is_refused(server, zip_bytes, tmp_path, monkeypatch):
    monkeypatch.setitem(dl.DATASETS, "celeba", dataclasses.replace(dl.DATASETS["celeba"], md5="0" * 32))
    server.routes["/c.zip"] = ("application/zip", zip_bytes, "")
    with pytest.raises(FaceganError, match="expected 0000"):
        dl.download("celeba", tmp_path, url=server.url + "/c.zip", progress=False, log=lambda *a: None)
    assert not (tmp_path / "celeba").exists()


def test_html_instead_of_zip_is_refused_with_the_manual_route(server, tmp_path):
    server.routes["/quota"] = ("text/html", b"<html>Too many users have viewed or downloaded this file</html>", "")
    with pytest.raises(FaceganError, match="quota is exceeded.*by hand"):
        dl.fetch(server.url + "/quota", tmp_path / "x.zip", progress=False, manual_hint="download it by hand")
    # The same page sent as a binary file is caught by its content.
    server.routes["/sneaky.zip"] = ("application/octet-stream", b"<!DOCTYPE html><html>quota</html>", "")
    with pytest.raises(FaceganError, match="was a web page"):
        dl.fetch(server.url + "/sneaky.zip", tmp_path / "y.zip", progress=False)
    assert not (tmp_path / "y.zip").exists()


def test_google_drive_confirm_page_is_followed(server, zip_bytes, tmp_path, monkeypatch):
    md5 = hashlib.md5(zip_bytes).hexdigest()
    monkeypatch.setitem(dl.DATASETS, "celeba", dataclasses.replace(dl.DATASETS["celeba"], md5=md5, expected_images=0))
    monkeypatch.setattr(dl, "GDRIVE_URL", server.url + "/uc?export=download&id={id}")
    server.routes["/uc"] = ("application/zip", zip_bytes, "confirm")
    folder = dl.download("celeba", tmp_path, progress=False, log=lambda *a: None)
    assert len(list(folder.rglob("*.png"))) == 4
    assert any("confirm=t" in path for path, _ in server.requests)


def test_404_and_connection_refused_say_what_to_do(server, tmp_path):
    with pytest.raises(FaceganError, match="HTTP 404.*by hand"):
        dl.fetch(server.url + "/nothing.zip", tmp_path / "a.zip", progress=False, manual_hint="download it by hand")
    with pytest.raises(FaceganError, match="cannot reach 127.0.0.1.*offline.*place"):
        dl.fetch(f"http://127.0.0.1:{closed_port()}/x.zip", tmp_path / "b.zip", progress=False,
                 manual_hint="place the file at data/x.zip")


def crafted_zip(path, name, data=b"x", mode=None):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        info = zipfile.ZipInfo(name)
        info.compress_type = zipfile.ZIP_DEFLATED
        if mode is not None:
            info.external_attr = mode << 16
        zf.writestr(info, data)
    return path


@pytest.mark.parametrize("name,mode,message", [
    ("../evil.txt", None, "outside"),
    ("/etc/evil.txt", None, "outside"),
    ("a/../../evil.txt", None, "outside"),
    ("link", stat.S_IFLNK | 0o777, "is a link"),
])
def test_unzip_refuses_entries_escaping_the_folder(tmp_path, name, mode, message):
    archive = crafted_zip(tmp_path / "bad.zip", name, mode=mode)
    with pytest.raises(FaceganError, match=message):
        dl.safe_unzip(archive, tmp_path / "out" / "data")
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / "data").exists()


def test_unzip_refuses_a_zip_bomb(tmp_path):
    archive = crafted_zip(tmp_path / "bomb.zip", "zeros.bin", data=bytes(60 * 2 ** 20))
    assert archive.stat().st_size < 2 ** 20  # 60 MiB of zeros packs into well under 1 MiB
    with pytest.raises(FaceganError, match="zip bomb"):
        dl.safe_unzip(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unknown_or_missing_dataset_names(tmp_path):
    with pytest.raises(FaceganError, match="not downloaded yet: run 'facegan data download celeba'"):
        prepare(DataConfig(source="celeba"), 32, cache_dir=tmp_path)
    with pytest.raises(FaceganError, match="unknown dataset"):
        dl.download("imagenet", tmp_path)


def test_celeba_download_fetches_its_attribute_file_and_survives_without_it(server, zip_bytes, tmp_path):
    attributes = b"2\nMale Smiling\n000000.png 1 -1\n000001.png -1 1\n"
    extras = (("list_attr_celeba.txt", "unused", hashlib.md5(attributes).hexdigest()),)
    info = dataclasses.replace(dl.DATASETS["celeba"], md5=hashlib.md5(zip_bytes).hexdigest(), expected_images=0,
                               extras=extras)
    server.routes["/c.zip"] = ("application/zip", zip_bytes, "")
    server.routes["/attr.txt"] = ("text/plain", attributes, "")
    lines = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(dl.DATASETS, "celeba", info)
        folder = dl.download("celeba", tmp_path / "a", url=server.url + "/c.zip", progress=False, log=lines.append,
                             extra_urls={"list_attr_celeba.txt": server.url + "/attr.txt"})
        assert (folder / "list_attr_celeba.txt").read_bytes() == attributes
        assert "downloaded list_attr_celeba.txt beside the images" in lines
        # A missing attribute file is one warning; the images are still ready.
        lines.clear()
        folder = dl.download("celeba", tmp_path / "b", url=server.url + "/c.zip", progress=False, log=lines.append,
                             extra_urls={"list_attr_celeba.txt": server.url + "/gone.txt"})
        assert len(list(folder.rglob("*.png"))) == 4 and not (folder / "list_attr_celeba.txt").exists()
        assert any(line.startswith("warning: list_attr_celeba.txt was not downloaded (download of") and "404" in line
                   for line in lines), lines
