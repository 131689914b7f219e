"""Fetch COVID-19-CT-Seg (Zenodo record 3757476) and unpack it safely.

    covbench data download covid-ct-seg --dest DATA          # from Zenodo, resumable
    covbench data download covid-ct-seg --dest DATA --from ARCHIVES   # zips already on disk

Downloads go to `<dest>/archives/<name>.part` and resume with an HTTP Range request after an
interruption; a finished file is verified (the checksum Zenodo publishes when it is reachable, and
every zip member's CRC) before it is extracted. Extraction refuses the whole archive when any member
would land outside the destination (absolute paths, `..`, drive letters) or is a link, and each
archive is unpacked into a temporary folder renamed into place, so `<dest>/<archive stem>/` is
either complete or absent. The result is the layout `covid_ct_seg.load` reads.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import stat
import tempfile
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from covbench.errors import CovbenchError

RECORD = "3757476"
BASE_URL = f"https://zenodo.org/records/{RECORD}/files"
API_URL = f"https://zenodo.org/api/records/{RECORD}"
ARCHIVES = (
    "COVID-19-CT-Seg_20cases.zip",
    "Infection_Mask.zip",
    "Lung_Mask.zip",
    "Lung_and_Infection_Mask.zip",
)
Progress = Callable[[str, int, int | None], None]  # (file name, bytes done, total bytes or None)
_CHUNK = 1 << 20


def fetch_checksums(api_url: str = API_URL, *, timeout: float = 30) -> dict[str, str]:
    """{file name: "md5:<hex>"} as the Zenodo record API lists them ({} when unreachable)."""
    try:
        with urlopen(api_url, timeout=timeout) as resp:
            record = json.load(resp)
    except (URLError, OSError, ValueError):
        return {}
    files = record.get("files", [])
    return {f["key"]: f["checksum"] for f in files if "key" in f and "checksum" in f}


def download_file(
    url: str,
    dest: Path,
    *,
    progress: Progress | None = None,
    retries: int = 3,
    timeout: float = 60,
    backoff: float = 1.0,
) -> Path:
    """Download `url` to `dest`, resuming `dest.part` with a Range request; returns `dest`.

    An interrupted transfer keeps the `.part` file; a later call (or one of the `retries`) continues
    where it stopped. A server that ignores Range restarts the file from zero.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    name = dest.name
    for attempt in range(retries + 1):
        offset = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": "covbench", **({"Range": f"bytes={offset}-"} if offset else {})}
        try:
            with urlopen(Request(url, headers=headers), timeout=timeout) as resp:
                if offset and resp.status == 206:
                    content_range = resp.headers.get("Content-Range", "")
                    if not content_range.startswith(f"bytes {offset}-"):
                        raise CovbenchError(
                            f"{url}: server answered range {content_range!r} to bytes={offset}-"
                        )
                    mode = "ab"
                else:  # 200: whole file (first request, or the server ignores Range)
                    offset, mode = 0, "wb"
                length = resp.headers.get("Content-Length")
                total = offset + int(length) if length is not None else None
                done = offset
                with open(part, mode) as f:
                    while chunk := resp.read(_CHUNK):
                        f.write(chunk)
                        done += len(chunk)
                        if progress:
                            progress(name, done, total)
                if total is not None and done < total:
                    raise OSError(f"connection closed at {done} of {total} bytes")
            os.replace(part, dest)
            return dest
        except HTTPError as exc:
            if exc.code == 416 and offset:  # the .part is already complete (or longer than the file)
                part.unlink()
                continue
            if attempt == retries or exc.code < 500:
                raise CovbenchError(f"{url}: HTTP {exc.code} {exc.reason}") from None
        except (URLError, OSError, http.client.HTTPException) as exc:  # IncompleteRead included
            if attempt == retries:
                kept = part.stat().st_size if part.exists() else 0
                raise CovbenchError(
                    f"{url}: download interrupted ({getattr(exc, 'reason', exc)}); {kept} bytes kept in "
                    f"{part.name}, run again to resume"
                ) from None
        time.sleep(backoff * (attempt + 1))
    raise CovbenchError(f"{url}: download failed after {retries + 1} attempts")


def verify_archive(path: Path, checksum: str | None = None) -> None:
    """Check a zip against its published checksum ("md5:<hex>" / "sha256:<hex>") and its members' CRCs."""
    path = Path(path)
    if checksum:
        algo, _, expected = checksum.partition(":")
        h = hashlib.new(algo)
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
        if h.hexdigest() != expected.lower():
            raise CovbenchError(
                f"{path}: {algo} checksum mismatch (got {h.hexdigest()}, expected {expected})"
            )
    try:
        with zipfile.ZipFile(path) as zf:
            broken = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise CovbenchError(f"{path}: not a readable zip archive ({exc})") from None
    if broken is not None:
        raise CovbenchError(f"{path}: member {broken!r} fails its CRC check")


def _member_target(info: zipfile.ZipInfo, archive: Path) -> PurePosixPath | None:
    """The relative path a member may be extracted to; raises on anything unsafe, None to skip."""
    name = info.filename.replace("\\", "/")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise CovbenchError(f"{archive}: member {info.filename!r} is a symbolic link; refusing to extract")
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        raise CovbenchError(f"{archive}: member {info.filename!r} has an absolute path; refusing to extract")
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if ".." in parts:
        raise CovbenchError(
            f"{archive}: member {info.filename!r} escapes the destination; refusing to extract"
        )
    if not parts or parts[0] == "__MACOSX" or parts[-1] == ".DS_Store":
        return None
    kind = stat.S_IFMT(mode)  # many writers leave the type bits empty: that means a plain file
    if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
        raise CovbenchError(f"{archive}: member {info.filename!r} is not a regular file; refusing to extract")
    return PurePosixPath(*parts)


def safe_extract(archive: Path, dest: Path) -> Path:
    """Extract `archive` into `dest/<archive stem>/` (a single top folder of that name is dropped).

    Every member is checked before anything is written; the folder appears complete or not at all.
    """
    archive, dest = Path(archive), Path(dest)
    out = dest / archive.stem
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise CovbenchError(f"{archive}: not a readable zip archive ({exc})") from None
    with zf:
        members = [(i, t) for i in zf.infolist() if (t := _member_target(i, archive)) is not None]
        tops = {t.parts[0] for _, t in members}
        strip = tops == {archive.stem} and all(len(t.parts) > 1 or i.is_dir() for i, t in members)
        dest.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{archive.stem}-", dir=dest))
        try:
            root = tmp.resolve()
            for info, target in members:
                rel = PurePosixPath(*target.parts[1:]) if strip else target
                if not rel.parts:
                    continue
                path = (tmp / rel).resolve()
                if root not in path.parents:  # belt and braces after the name checks
                    raise CovbenchError(f"{archive}: member {info.filename!r} escapes the destination")
                if info.is_dir():
                    path.mkdir(parents=True, exist_ok=True)
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(path, "wb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)
            if out.exists():
                shutil.rmtree(out)
            os.rename(tmp, out)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def install_from_dir(
    src: Path,
    dest: Path,
    *,
    names: Sequence[str] = ARCHIVES,
    checksums: Mapping[str, str] | None = None,
    required: Sequence[str] = ARCHIVES[:2],
) -> Path:
    """Verify and extract archives already on disk (`--from DIR`) into `dest`. Archives in `names`
    that are absent are skipped unless they are `required` (the images and the lesion masks)."""
    src, dest = Path(src), Path(dest)
    if not src.is_dir():
        raise CovbenchError(f"{src}: archive folder does not exist")
    missing = [n for n in required if not (src / n).is_file()]
    if missing:
        raise CovbenchError(f"{src / missing[0]}: archive not found")
    for name in names:
        archive = src / name
        if archive.is_file():
            verify_archive(archive, (checksums or {}).get(name))
            safe_extract(archive, dest)
    return dest


def download(
    dest: Path,
    *,
    names: Sequence[str] = ARCHIVES,
    base_url: str = BASE_URL,
    api_url: str | None = API_URL,
    checksums: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    retries: int = 3,
) -> Path:
    """Download the record's archives into `dest/archives/`, verify them and extract into `dest`.

    Checksums come from `checksums`, else from the Zenodo API at `api_url` (None: CRC check only).
    Archives already downloaded and verified are not fetched again.
    """
    dest = Path(dest)
    if checksums is None:
        checksums = fetch_checksums(api_url) if api_url else {}
    archives = dest / "archives"
    for name in names:
        target = archives / name
        if not target.is_file():
            download_file(
                f"{base_url.rstrip('/')}/{name}?download=1", target, progress=progress, retries=retries
            )
        try:
            verify_archive(target, checksums.get(name))
        except CovbenchError:
            target.unlink()  # a corrupt file must not be resumed or reused
            raise
    for name in names:
        safe_extract(archives / name, dest)
    return dest
