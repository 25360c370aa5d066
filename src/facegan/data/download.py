"""Getting CelebA: resumable, verified downloads and a safe unzip, ending in a folder for --data.

What goes wrong elsewhere, and what happens here instead:
- Google Drive answers large files with an HTML "can't scan for viruses" page, and with an HTML
  "quota exceeded" page when the file is popular; tools save that page as the zip. Here the
  confirm form is followed, and a page that is still HTML is refused with the manual route.
- A dropped connection restarts a 1.4 GB download. Here it continues from a .part file (HTTP Range).
- A wrong or truncated file is unzipped anyway. Here size and MD5 are checked where known.
- Unzipping trusts the archive. Here entries that escape the folder, links and absurd expansion
  (zip bombs) stop the unzip with a message.
"""

from __future__ import annotations

import hashlib
import html
import http.client
import json
import os
import re
import shutil
import stat
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import FaceganError
from ..fileio import no_space_error, write_text_atomic
from ..paths import cache_root

GDRIVE_URL = "https://drive.google.com/uc?export=download&id={id}"
_CHUNK = 1 << 20
MAX_UNZIPPED_BYTES = 40 * 2 ** 30  # CelebA aligned unzips to ~1.4 GB; 40 GB means something is wrong
MAX_RATIO = 200                    # JPEGs barely compress; a 200x ratio is a bomb, not a photo archive


@dataclass(frozen=True)
class Dataset:
    name: str
    filename: str
    description: str
    url: str = ""             # a direct URL, or empty for Google Drive
    gdrive_id: str = ""
    md5: str = ""             # known checksum of the zip, verified when set
    expected_images: int = 0  # what a complete download holds (reported, checked loosely)
    suggested_crop: int = 0   # the --crop that frames the face for this set
    # Files fetched beside the images: (file name, Google Drive id, MD5). Not fatal when they fail.
    extras: tuple = ()


DATASETS = {
    "celeba-small": Dataset(
        "celeba-small", "processed-celeba-small.zip",
        "CelebA subset pre-processed to 64x64 by Udacity's face-generation project",
        url="https://s3.amazonaws.com/video.udacity-data.com/topher/2018/November/"
            "5be7eb6f_processed-celeba-small/processed-celeba-small.zip",
        expected_images=32600),
    "celeba": Dataset(
        "celeba", "img_align_celeba.zip", "official aligned CelebA, 202,599 JPEGs of 178x218",
        gdrive_id="0B7EVK8r0v71pZjFTYXZWM3FlRnM", md5="00d2c5bc6d35e252742224ab0c1e8fcb",
        expected_images=202599, suggested_crop=108,
        # The 40 binary attributes per image (Male, Young, Pale_Skin, ...): what `data audit` reports
        # and `--balance ATTR` balances.
        extras=(("list_attr_celeba.txt", "0B7EVK8r0v71pblRyaVFSWGxPY0U", "75e246fa4810816ffd6ee81facbd244c"),)),
}


def registry_path() -> Path:
    return cache_root() / "datasets.json"


def registered(name: str) -> Path | None:
    """The folder a dataset name was downloaded to, so `--data celeba` works."""
    try:
        folder = json.loads(registry_path().read_text()).get(name)
    except (OSError, ValueError):
        return None
    return Path(folder) if folder and Path(folder).is_dir() else None


def _register(name: str, folder: Path) -> None:
    path = registry_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    known[name] = str(folder)
    write_text_atomic(path, json.dumps(known, indent=1))


def download(name: str, dest, url: str | None = None, progress: bool = True, log=print,
             extra_urls: dict | None = None) -> Path:
    """Download, verify and unzip dataset `name` into dest/name; register it; return the folder."""
    if name not in DATASETS:
        raise FaceganError(f"unknown dataset '{name}': choose one of {', '.join(DATASETS)}")
    info = DATASETS[name]
    dest = Path(dest).expanduser().resolve()
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / info.filename
    folder = dest / name
    if folder.is_dir() and (folder / ".complete").exists():
        log(f"{name} is already in {folder}")
    elif folder.exists():  # facegan's own unzip always ends with .complete: this folder is someone else's
        raise FaceganError(f"{folder} already exists and was not made by facegan: move it away (its files are "
                           f"kept), or pass another --dest")
    else:
        if archive.exists():
            log(f"using the archive already at {archive}")
        else:
            source = url or info.url or GDRIVE_URL.format(id=info.gdrive_id)
            fetch(source, archive, progress=progress, manual_hint=_manual_hint(info, archive))
        verify(archive, info.md5, manual_hint=_manual_hint(info, archive))
        count = safe_unzip(archive, folder)
        log(f"unzipped {count} files into {folder}")
        if info.expected_images and count < info.expected_images:
            log(f"warning: {name} should hold {info.expected_images} images but the archive had {count} files")
    for filename, gdrive_id, md5 in info.extras:
        _fetch_extra(folder / filename, (extra_urls or {}).get(filename) or GDRIVE_URL.format(id=gdrive_id), md5,
                     progress, log)
    _register(name, folder)
    return folder


def _fetch_extra(target: Path, url: str, md5: str, progress: bool, log) -> None:
    """A file that comes with a data set (CelebA's attributes): fetched and verified, or one warning line."""
    if target.is_file():
        return
    hint = f"save it by hand as {target} to use it"
    try:
        fetch(url, target, progress=progress, manual_hint=hint)
        if md5 and _md5(target) != md5:
            target.replace(target.with_name(target.name + ".bad"))
            raise FaceganError(f"it has the wrong MD5 (kept as {target.name}.bad); {hint}")
        log(f"downloaded {target.name} beside the images")
    except FaceganError as exc:
        log(f"warning: {target.name} was not downloaded ({exc}); the images are ready without it")


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(_CHUNK * 8):
            digest.update(block)
    return digest.hexdigest()


def _manual_hint(info: Dataset, archive: Path) -> str:
    where = info.url or f"https://drive.google.com/file/d/{info.gdrive_id}/view"
    return (f"download {info.filename} by hand from {where} (in a browser), save it as {archive}, "
            f"and run the same command again")


def fetch(url: str, target: Path, progress: bool = True, manual_hint: str = "", timeout: float = 60) -> Path:
    """Stream `url` to `target`, resuming a previous `target`.part; follow Google Drive's confirm page."""
    part = target.with_name(target.name + ".part")
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (raises ValueError for a port that is not a number)
    except ValueError as exc:
        raise FaceganError(f"--url {url!r} is not a web address ({exc}): use http(s)://host/path") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise FaceganError(f"--url {url!r} is not a web address: use http(s)://host/path")
    for _attempt in range(3):  # the file itself, or at most two confirm pages in front of it
        have = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": "facegan", **({"Range": f"bytes={have}-"} if have else {})}
        request = urllib.request.Request(url, headers=headers)
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and have:  # asked past the end: the part file is already whole
                os.replace(part, target)
                return target
            reason = " ".join(str(exc.reason).split())  # a redirect loop's reason spans lines
            raise FaceganError(f"download of {url} failed: HTTP {exc.code} {reason}; {manual_hint}") from None
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            reason = " ".join(str(getattr(exc, "reason", exc)).split())
            raise FaceganError(f"cannot reach {urllib.parse.urlsplit(url).netloc} ({reason}): you may be offline; "
                               f"{manual_hint}") from None
        with response:
            if "text/html" in response.headers.get("Content-Type", ""):
                page = response.read(2_000_000).decode("utf-8", "replace")
                url = _confirm_url(page, url)
                if url is None:
                    raise FaceganError(_html_problem(page) + "; " + manual_hint)
                continue
            resumed = response.status == 206
            total = _total_size(response, have if resumed else 0)
            _stream(response, part, append=resumed, total=total, progress=progress, start=have if resumed else 0)
        if total and part.stat().st_size != total:
            raise FaceganError(f"download of {target.name} stopped at {part.stat().st_size} of {total} bytes: "
                               f"run the same command again to continue it")
        _refuse_html_file(part, manual_hint)
        os.replace(part, target)
        return target
    raise FaceganError(f"the server kept answering with web pages instead of {target.name}; {manual_hint}")


def _total_size(response, offset: int) -> int:
    """The whole file's size from the headers, or 0 when they do not say (or say nonsense: 'abc')."""
    content_range = response.headers.get("Content-Range", "")
    total = content_range.rsplit("/", 1)[1].strip() if "/" in content_range else ""
    if total.isdigit():
        return int(total)
    length = (response.headers.get("Content-Length") or "").strip()
    return offset + int(length) if length.isdigit() else 0


def _stream(response, part: Path, append: bool, total: int, progress: bool, start: int) -> None:
    from tqdm import tqdm

    with open(part, "ab" if append else "wb") as out, tqdm(
            total=total or None, initial=start, unit="B", unit_scale=True, desc=part.name[:-5],
            disable=not progress, leave=False) as bar:
        try:
            while block := response.read(_CHUNK):
                out.write(block)
                bar.update(len(block))
        except (OSError, ValueError, http.client.HTTPException):
            pass  # a dropped connection: what arrived stays in the .part file for the next run
        out.flush()
        os.fsync(out.fileno())


def _confirm_url(page: str, url: str) -> str | None:
    """Google Drive's 'large file' page holds a form (or link) that leads to the file itself."""
    form = re.search(r'<form[^>]*id="download-form"[^>]*action="([^"]+)"', page)
    if form:
        fields = dict(re.findall(r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page))
        action = urllib.parse.urljoin(url, html.unescape(form.group(1)))
        return action + ("&" if "?" in action else "?") + urllib.parse.urlencode(fields)
    token = re.search(r"confirm=([0-9A-Za-z_-]+)", page)
    if token and "confirm=" not in url:
        return url + ("&" if "?" in url else "?") + f"confirm={token.group(1)}"
    return None


def _html_problem(page: str) -> str:
    lowered = page.lower()
    if "quota" in lowered or "too many users" in lowered:
        return "Google Drive refused the download: the file's download quota is exceeded for today"
    return "the server sent a web page instead of the file"


def _refuse_html_file(path: Path, manual_hint: str) -> None:
    with open(path, "rb") as f:
        head = f.read(512).lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        path.unlink()
        raise FaceganError(f"the download was a web page, not a zip (often Google Drive's quota page); {manual_hint}")


def verify(archive: Path, md5: str, manual_hint: str = "") -> None:
    """The archive must be a zip and, where its MD5 is known, the right one."""
    _refuse_html_file(archive, manual_hint)
    if md5:
        actual = _md5(archive)
        if actual != md5:
            bad = archive.with_name(archive.name + ".bad")
            os.replace(archive, bad)
            raise FaceganError(f"{archive.name} has MD5 {actual}, expected {md5}: the file is damaged "
                               f"or a different one (moved to {bad.name}); delete it and run again, or {manual_hint}")
    if not zipfile.is_zipfile(archive):
        raise FaceganError(f"{archive} is not a zip file: delete it and run again, or {manual_hint}")


def safe_unzip(archive: Path, folder: Path) -> int:
    """Extract into `folder`, refusing escapes, links and zip bombs; all or nothing."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".unzipping")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise FaceganError(f"{archive} is damaged ({str(exc)[:80]}): delete it and run the download again") from None
    with zf:
        # macOS archives carry __MACOSX/._name resource forks: metadata, not images.
        members = [m for m in zf.infolist()
                   if not m.filename.startswith("__MACOSX/") and not Path(m.filename).name.startswith("._")]
        total = sum(m.file_size for m in members)
        packed = max(1, sum(m.compress_size for m in members))
        if total > MAX_UNZIPPED_BYTES or total / packed > MAX_RATIO:
            raise FaceganError(f"refusing to unzip {archive.name}: it would expand to {total / 2**30:.1f} GiB "
                               f"from {packed / 2**20:.1f} MiB (a zip bomb or a damaged archive)")
        root = tmp.resolve()
        for member in members:
            mode = member.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise FaceganError(f"refusing to unzip {archive.name}: entry '{member.filename}' is a link")
            target = (root / member.filename).resolve()
            if member.filename.startswith(("/", "\\")) or (target != root and root not in target.parents):
                raise FaceganError(f"refusing to unzip {archive.name}: entry '{member.filename}' would land "
                                   f"outside {folder}")
        tmp.mkdir(parents=True)
        written, member = 0, None
        try:
            for member in members:
                if member.is_dir():
                    continue
                target = root / member.filename
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, open(target, "wb") as dst:
                    # Count real bytes too: a header can lie about file_size.
                    while block := src.read(_CHUNK):
                        written += len(block)
                        if written > MAX_UNZIPPED_BYTES:
                            raise FaceganError(f"refusing to unzip {archive.name}: it expands past "
                                               f"{MAX_UNZIPPED_BYTES / 2**30:.0f} GiB")
                        dst.write(block)
        except zipfile.BadZipFile as exc:  # a CRC mismatch: the download is damaged
            shutil.rmtree(tmp, ignore_errors=True)
            raise FaceganError(f"{archive} is damaged ({exc}): delete it and run the download again") from None
        except (RuntimeError, NotImplementedError) as exc:  # an encrypted entry; a compression zipfile lacks
            shutil.rmtree(tmp, ignore_errors=True)
            raise FaceganError(f"cannot unzip entry '{member.filename}' of {archive.name} ({exc}): an encrypted or "
                               f"unusually compressed archive; unzip it yourself and pass the folder as "
                               f"--data") from None
        except (FileExistsError, NotADirectoryError, IsADirectoryError):
            shutil.rmtree(tmp, ignore_errors=True)
            raise FaceganError(f"refusing to unzip {archive.name}: entry '{member.filename}' clashes with another "
                               f"entry (a file and a folder of the same name); the archive is not a face set") from None
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            no_space_error(exc, folder, needed=total)
            raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    (tmp / ".complete").write_text("")
    if folder.exists():  # never delete what facegan did not write: download() refuses before this
        shutil.rmtree(tmp, ignore_errors=True)
        raise FaceganError(f"{folder} appeared while unzipping: move it away and run the download again")
    os.replace(tmp, folder)
    return sum(1 for m in members if not m.is_dir())
