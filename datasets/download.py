"""Fetch COVID-19-CT-Seg (Zenodo record 3757476) and unpack it safely.

    covbench data download covid-ct-seg --dest DATA          # from Zenodo, resumable
    covbench data download covid-ct-seg --dest DATA --from ARCHIVES   # zips already on disk

Downloads go to `<dest>/archives/<name>.part` and resume with an HTTP Range request after an
interruption; a finished file is verified (the checksum Zenodo publishes when it is reachable, and
every zip member's CRC) before it is extracted. Archives given with `--from DIR` are verified the
same way whenever a checksum is known: a sidecar `<archive>.md5` / `<archive>.sha256` next to it,
or the Zenodo record when it is reachable. An archive no checksum could be found for is said so
(a warning) and recorded as "crc only" in the data manifest `<dest>/covbench-data.json`.

Extraction refuses the whole archive when any member would land outside the destination (absolute
paths, `..`, drive letters) or is a link, when it holds more than `MAX_MEMBERS` members, more than
`MAX_EXTRACT_BYTES` uncompressed (a multiple of the dataset's known size), or a member compressed
beyond `MAX_RATIO` (more than deflate can reach: a crafted "zip bomb"). Each archive is unpacked into
a temporary folder renamed into place, so `<dest>/<archive stem>/` is either complete or absent. The
result is the layout `covid_ct_seg.load` reads.
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
import warnings
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from covbench.errors import CovbenchError, quote

DOWNLOADABLE = ("covid-ct-seg",)  # the datasets `covbench data download` can fetch
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
Notify = Callable[[str], None]  # receives a one-line warning
_CHUNK = 1 << 20
DATA_MANIFEST = "covbench-data.json"  # in the destination: where each archive came from, how verified
# The record holds 20 CT volumes (512 x 512 and 630 x 630 slices, ~3,500 slices in all) and three
# sets of masks: about 4 GiB even stored uncompressed (int16 images, uint8 masks). Extraction stops
# at four times that, so a re-packed archive fits and a decompression bomb does not fill the disk.
DATASET_BYTES = 4 << 30
MAX_EXTRACT_BYTES = 4 * DATASET_BYTES  # per archive
MAX_MEMBERS = 1000  # per archive; the record has 20 files in each
MAX_RATIO = 1100  # uncompressed / compressed per member; deflate cannot exceed ~1032
SIDECARS = ("md5", "sha256", "sha1")  # `<archive>.<algorithm>` files holding the hex digest


def check_downloadable(name: str) -> None:
    """Raise a CovbenchError naming the downloadable datasets unless `name` is one."""
    if name not in DOWNLOADABLE:
        raise CovbenchError(f"no download for {quote(name)}; downloadable: {', '.join(DOWNLOADABLE)}")


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


def _warn(message: str) -> None:
    warnings.warn(message, UserWarning, stacklevel=3)


def _digest(path: Path, checksum: str) -> tuple[str, str, str]:
    """(algorithm, computed hex, expected hex) for a checksum "<algorithm>:<hex>"."""
    algo, sep, expected = checksum.partition(":")
    algo = algo.strip().lower()
    if not sep or not expected.strip():
        raise CovbenchError(f"{path}: checksum {quote(checksum)} is not ALGORITHM:HEX (e.g. md5:0f3a...)")
    try:
        h = hashlib.new(algo)
    except (ValueError, TypeError):
        known = ", ".join(sorted(a for a in hashlib.algorithms_guaranteed if not a.startswith("shake")))
        raise CovbenchError(
            f"{path}: unknown checksum algorithm {quote(algo)} in {quote(checksum)} (known: {known})"
        ) from None
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except OSError as exc:
        raise CovbenchError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return algo, h.hexdigest(), expected.strip().lower()


def verify_archive(path: Path, checksum: str | None = None) -> str:
    """Check a zip against its published checksum ("md5:<hex>" / "sha256:<hex>") and its members'
    CRCs. Returns how it was verified: "checksum", or "crc only" when no checksum was given."""
    path = Path(path)
    if checksum:
        algo, got, expected = _digest(path, checksum)
        if got != expected:
            raise CovbenchError(f"{path}: {algo} checksum mismatch (got {got}, expected {expected})")
    try:
        with zipfile.ZipFile(path) as zf:
            broken = zf.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
        raise CovbenchError(f"{path}: not a readable zip archive ({exc})") from None
    if broken is not None:
        raise CovbenchError(f"{path}: member {broken!r} fails its CRC check")
    return "checksum" if checksum else "crc only"


def sidecar_checksum(archive: Path) -> str | None:
    """The checksum "<algorithm>:<hex>" from a `<archive>.md5` / `.sha256` / `.sha1` file beside the
    archive (first word of its first line, as `md5sum` writes it), or None."""
    for algo in SIDECARS:
        side = archive.with_name(f"{archive.name}.{algo}")
        if side.is_file():
            try:
                words = side.read_text().split()
            except (OSError, UnicodeDecodeError) as exc:
                raise CovbenchError(f"{side}: cannot read checksum file ({exc})") from None
            if not words:
                raise CovbenchError(f"{side}: empty checksum file")
            return f"{algo}:{words[0]}"
    return None


def write_manifest(dest: Path, entries: dict[str, dict]) -> Path:
    """Record, per archive, where it came from, its size, and how it was verified, in
    `<dest>/covbench-data.json` (merged with what an earlier call recorded)."""
    from covbench.folder.manifest import now_iso

    path = Path(dest) / DATA_MANIFEST
    try:
        old = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        old = {}
    archives = {**old.get("archives", {}), **entries}
    data = {"record": RECORD, "updated": now_iso(), "archives": archives}
    unverified = sorted(n for n, e in archives.items() if e.get("verified") != "checksum")
    data["unverified"] = unverified
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def _entry(archive: Path, origin: str, checksum: str | None, verified: str) -> dict:
    return {"from": origin, "bytes": archive.stat().st_size, "checksum": checksum, "verified": verified}


def _unverified(name: str, why: str, notify: Notify) -> None:
    notify(
        f"{name}: not verified against a published checksum ({why}); only its members' CRCs were "
        f"checked - recorded as 'crc only' in {DATA_MANIFEST}"
    )


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


def _check_sizes(members: list[zipfile.ZipInfo], archive: Path, max_bytes: int) -> None:
    """Member count, total uncompressed size and per-member compression ratio, from the central
    directory (zipfile never returns more bytes than a member declares, so the totals hold)."""
    if len(members) > MAX_MEMBERS:
        raise CovbenchError(
            f"{archive}: {len(members)} members, more than the {MAX_MEMBERS} a dataset archive may hold; "
            "refusing to extract"
        )
    total = sum(i.file_size for i in members)
    if total > max_bytes:
        raise CovbenchError(
            f"{archive}: would extract {total / 2**30:.1f} GiB, more than the {max_bytes / 2**30:.1f} GiB "
            "limit (a multiple of the dataset's known size); refusing to extract"
        )
    for info in members:
        if info.file_size > _CHUNK and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            ratio = info.file_size / max(info.compress_size, 1)
            raise CovbenchError(
                f"{archive}: member {info.filename!r} expands {ratio:,.0f}-fold ({info.compress_size} -> "
                f"{info.file_size} bytes), beyond any real data (limit {MAX_RATIO}); refusing to extract"
            )


def safe_extract(archive: Path, dest: Path, *, max_bytes: int = MAX_EXTRACT_BYTES) -> Path:
    """Extract `archive` into `dest/<archive stem>/` (a single top folder of that name is dropped).

    Every member is checked before anything is written (paths, links, count, total size, ratio);
    the folder appears complete or not at all.
    """
    archive, dest = Path(archive), Path(dest)
    out = dest / archive.stem
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise CovbenchError(f"{archive}: not a readable zip archive ({exc})") from None
    with zf:
        members = [(i, t) for i in zf.infolist() if (t := _member_target(i, archive)) is not None]
        _check_sizes([i for i, _ in members], archive, max_bytes)
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
                try:
                    with zf.open(info) as src, open(path, "wb") as dst:
                        shutil.copyfileobj(src, dst, _CHUNK)
                except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, zlib.error) as exc:
                    raise CovbenchError(
                        f"{archive}: cannot extract member {info.filename!r} ({type(exc).__name__}: {exc})"
                    ) from None
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
    api_url: str | None = None,
    notify: Notify = _warn,
    max_bytes: int = MAX_EXTRACT_BYTES,
) -> Path:
    """Verify and extract archives already on disk (`--from DIR`) into `dest`. Archives in `names`
    that are absent are skipped unless they are `required` (the images and the lesion masks).

    Each archive's checksum is, in this order: `checksums[name]`, a sidecar `<archive>.md5` /
    `.sha256` / `.sha1`, or the Zenodo record at `api_url` (asked only when some archive has none
    yet). An archive none is known for is extracted after its CRC check, with a warning through
    `notify`; the data manifest records which archives were verified how."""
    src, dest = Path(src), Path(dest)
    if not src.is_dir():
        raise CovbenchError(f"{src}: archive folder does not exist")
    missing = [n for n in required if not (src / n).is_file()]
    if missing:
        raise CovbenchError(f"{src / missing[0]}: archive not found")
    present = [n for n in names if (src / n).is_file()]
    known = {n: c for n in present if (c := (checksums or {}).get(n) or sidecar_checksum(src / n))}
    if api_url and any(n not in known for n in present):
        published = fetch_checksums(api_url, timeout=10)
        known.update({n: published[n] for n in present if n not in known and n in published})
    entries: dict[str, dict] = {}
    for name in present:
        archive = src / name
        how = verify_archive(archive, known.get(name))
        if how != "checksum":
            _unverified(name, "no checksum given, no sidecar file, none published or reachable", notify)
        entries[name] = _entry(archive, str(archive.resolve()), known.get(name), how)
    for name in present:
        safe_extract(src / name, dest, max_bytes=max_bytes)
    write_manifest(dest, entries)
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
    notify: Notify = _warn,
    max_bytes: int = MAX_EXTRACT_BYTES,
) -> Path:
    """Download the record's archives into `dest/archives/`, verify them and extract into `dest`.

    Checksums come from `checksums`, else from the Zenodo API at `api_url` (None: CRC check only).
    An archive without one is said so through `notify` and recorded as "crc only" in the data
    manifest. Archives already downloaded and verified are not fetched again.
    """
    dest = Path(dest)
    if checksums is None:
        checksums = fetch_checksums(api_url) if api_url else {}
    why = (
        "not in the checksums given"
        if api_url is None or checksums
        else f"the record's checksums could not be fetched from {api_url}"
    )
    archives = dest / "archives"
    entries: dict[str, dict] = {}
    for name in names:
        target = archives / name
        url = f"{base_url.rstrip('/')}/{name}?download=1"
        if not target.is_file():
            download_file(url, target, progress=progress, retries=retries)
        try:
            how = verify_archive(target, checksums.get(name))
        except CovbenchError:
            target.unlink()  # a corrupt file must not be resumed or reused
            raise
        if how != "checksum":
            _unverified(name, why, notify)
        entries[name] = _entry(target, url, checksums.get(name), how)
    for name in names:
        safe_extract(archives / name, dest, max_bytes=max_bytes)
    write_manifest(dest, entries)
    return dest
