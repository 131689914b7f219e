"""Download with resume, verification and safe extraction, against a local HTTP server."""

from __future__ import annotations

import hashlib
import io
import json
import stat
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from covbench.datasets import covid_ct_seg, download
from covbench.datasets.phantom import generate_phantom
from covbench.errors import CovbenchError


class Server:
    """Serves `files` from memory; honours `Range: bytes=N-` unless `ignore_range`; with `flaky`,
    the first GET of a file sends half the body and hangs up."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.ignore_range = False
        self.flaky: set[str] = set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                path = self.path.split("?")[0]
                rng = self.headers.get("Range")
                outer.requests.append((path, rng))
                if path == "/api":
                    body = json.dumps(
                        {
                            "files": [
                                {"key": k, "checksum": "md5:" + hashlib.md5(v).hexdigest()}
                                for k, v in outer.files.items()
                            ]
                        }
                    ).encode()
                    return self._send(200, body)
                name = path.rsplit("/", 1)[-1]
                if name not in outer.files:
                    return self._send(404, b"not found")
                data = outer.files[name]
                start = 0
                if rng and not outer.ignore_range:
                    start = int(rng.split("=")[1].split("-")[0])
                    if start >= len(data):
                        return self._send(416, b"")
                    body = data[start:]
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    body = data
                    self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if name in outer.flaky:
                    outer.flaky.discard(name)
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def _send(self, code, body):
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture()
def server():
    with Server() as s:
        yield s


def _zip_dir(folder: Path, top: str | None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for p in sorted(folder.iterdir()):
            zf.write(p, f"{top}/{p.name}" if top else p.name)
    return buf.getvalue()


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, bytes]:
    """The phantom packed like the Zenodo record: images with a top folder, masks flat."""
    root = generate_phantom(tmp_path_factory.mktemp("ph"), n_patients=2, size=40, n_slices=10)
    return {
        "COVID-19-CT-Seg_20cases.zip": _zip_dir(root / covid_ct_seg.IMAGE_DIR, covid_ct_seg.IMAGE_DIR),
        "Infection_Mask.zip": _zip_dir(root / covid_ct_seg.LESION_DIR, None),
        "Lung_Mask.zip": _zip_dir(root / covid_ct_seg.LUNG_DIR, None),
    }


NAMES = ("COVID-19-CT-Seg_20cases.zip", "Infection_Mask.zip", "Lung_Mask.zip")


def test_download_verify_extract_and_read(server, archives, tmp_path):
    server.files.update(archives)
    seen: list[tuple[str, int, int | None]] = []
    dest = download.download(
        tmp_path / "data",
        names=NAMES,
        base_url=server.url + "/files",
        api_url=server.url + "/api",
        progress=lambda n, d, t: seen.append((n, d, t)),
    )
    cases = list(covid_ct_seg.load(dest))
    assert len(cases) == 2 and cases[0].lung is not None
    assert {n for n, _, _ in seen} == set(NAMES) and all(d == t for n, d, t in seen if d == t)
    assert seen[-1][1] == seen[-1][2] == len(archives[NAMES[-1]])
    # a second call uses the verified archives on disk: no new file requests
    before = len(server.requests)
    download.download(dest, names=NAMES, base_url=server.url + "/files", api_url=server.url + "/api")
    assert [r for r in server.requests[before:] if r[0] != "/api"] == []


def test_resume_with_range_after_interruption(server, archives, tmp_path):
    name = NAMES[0]
    server.files[name] = archives[name]
    server.flaky.add(name)
    target = tmp_path / name
    with pytest.raises(CovbenchError, match="download interrupted.*run again to resume"):
        download.download_file(server.url + "/" + name, target, retries=0)
    part = target.with_name(name + ".part")
    assert 0 < part.stat().st_size < len(archives[name]) and not target.exists()
    download.download_file(server.url + "/" + name, target, retries=0)
    assert target.read_bytes() == archives[name] and not part.exists()
    assert server.requests[-1] == (f"/{name}", f"bytes={len(archives[name]) // 2}-")


def test_retries_resume_within_one_call(server, archives, tmp_path):
    name = NAMES[1]
    server.files[name] = archives[name]
    server.flaky.add(name)
    target = download.download_file(server.url + "/" + name, tmp_path / name, retries=2, backoff=0)
    assert target.read_bytes() == archives[name]
    assert [r[1] is not None for r in server.requests] == [False, True]


def test_server_ignoring_range_restarts(server, archives, tmp_path):
    name = NAMES[2]
    server.files[name] = archives[name]
    server.ignore_range = True
    (tmp_path / (name + ".part")).write_bytes(b"stale bytes")
    target = download.download_file(server.url + "/" + name, tmp_path / name, retries=0)
    assert target.read_bytes() == archives[name]


def test_complete_part_file_and_missing_file(server, archives, tmp_path):
    name = NAMES[2]
    server.files[name] = archives[name]
    (tmp_path / (name + ".part")).write_bytes(archives[name])  # complete: server answers 416
    assert (
        download.download_file(server.url + "/" + name, tmp_path / name, backoff=0).read_bytes()
        == archives[name]
    )
    with pytest.raises(CovbenchError, match="HTTP 404"):
        download.download_file(server.url + "/nothing.zip", tmp_path / "nothing.zip")


def test_checksum_mismatch_is_refused(server, archives, tmp_path):
    server.files.update(archives)
    with pytest.raises(CovbenchError, match="md5 checksum mismatch"):
        download.download(
            tmp_path / "d", names=NAMES[:1], base_url=server.url, checksums={NAMES[0]: "md5:" + "0" * 32}
        )
    assert not (tmp_path / "d" / "archives" / NAMES[0]).exists()  # not kept for reuse


def _crafted(path: Path, members: list[tuple[str, bytes, int | None]]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data, mode in members:
            info = zipfile.ZipInfo(name)
            if mode is not None:
                info.external_attr = mode << 16
            zf.writestr(info, data)
    return path


@pytest.mark.parametrize(
    ("member", "mode", "problem"),
    [
        ("../evil.txt", None, "escapes the destination"),
        ("Infection_Mask/../../evil.txt", None, "escapes the destination"),
        ("/tmp/evil.txt", None, "absolute path"),
        ("C:/evil.txt", None, "absolute path"),
        ("link.nii.gz", stat.S_IFLNK | 0o777, "symbolic link"),
    ],
)
def test_malicious_members_refuse_the_whole_archive(tmp_path, member, mode, problem):
    archive = _crafted(
        tmp_path / "Infection_Mask.zip", [("ok.nii.gz", b"fine", None), (member, b"/etc/passwd", mode)]
    )
    dest = tmp_path / "dest"
    with pytest.raises(CovbenchError, match=rf"Infection_Mask\.zip: member .* {problem}"):
        download.safe_extract(archive, dest)
    assert not (tmp_path / "evil.txt").exists()
    assert not (dest / "Infection_Mask").exists()  # nothing extracted, not even the good member
    assert [p.name for p in dest.iterdir()] == [] if dest.exists() else True


def test_from_dir_and_corrupt_archive(tmp_path, archives):
    src = tmp_path / "zips"
    src.mkdir()
    for name, data in archives.items():
        (src / name).write_bytes(data)
    dest = download.install_from_dir(src, tmp_path / "data", names=NAMES)
    assert len(list(covid_ct_seg.load(dest))) == 2
    expected = [*(n[:-4] for n in NAMES), download.DATA_MANIFEST]  # + the data manifest
    assert sorted(p.name for p in dest.iterdir()) == sorted(expected)
    raw = bytearray(archives[NAMES[1]])
    pos = raw.index(b"\x1f\x8b") + 200  # inside the first stored member's bytes
    raw[pos] ^= 0xFF
    (src / NAMES[1]).write_bytes(bytes(raw))
    with pytest.raises(CovbenchError, match=r"Infection_Mask\.zip: member .* fails its CRC check"):
        download.install_from_dir(src, tmp_path / "data2", names=NAMES)
    (src / NAMES[0]).unlink()
    with pytest.raises(CovbenchError, match=r"COVID-19-CT-Seg_20cases\.zip: archive not found"):
        download.install_from_dir(src, tmp_path / "data3", names=NAMES)
    assert np.isscalar(len(raw))
