"""Where trials keep checkpoints (covbench.folder.storage), on a local folder and on a real S3 endpoint.

The S3 side speaks HTTP to moto's server (tests/s3server.py): what botocore really sends
(multipart uploads, conditional PUTs, signatures) is what is tested. Every check of what ended up
in storage is made with another tool (boto3, the file system) as well as through `Storage`.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
from helpers import RUN_BOUND_S
from s3server import free_port, server_process

from covbench.errors import CovbenchError, RunFolderWarning, RunLocked
from covbench.folder.layout import STORAGE_LOCK
from covbench.folder.storage import PART_BYTES, Storage

BOUND = 60.0  # validate() must give up on its own long before this; it only turns a hang into a failure


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


class Raw:
    """The storage seen without covbench.folder.storage: the file system, or boto3 on the bucket."""

    def __init__(self, storage: Storage, s3: Any = None) -> None:
        self.storage, self.s3 = storage, s3
        self.bucket, _, self.prefix = storage.uri.partition("://")[2].partition("/")

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def put(self, name: str, data: bytes) -> None:
        if self.s3 is None:
            path = Path(self.storage.uri.removeprefix("file://"), name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        else:
            self.s3.client().put_object(Bucket=self.bucket, Key=self.key(name), Body=data)

    def get(self, name: str) -> bytes | None:
        if self.s3 is None:
            path = Path(self.storage.uri.removeprefix("file://"), name)
            return path.read_bytes() if path.exists() else None
        client = self.s3.client()
        try:
            return client.get_object(Bucket=self.bucket, Key=self.key(name))["Body"].read()
        except client.exceptions.NoSuchKey:
            return None

    def names(self) -> set[str]:
        """Every object (file) under the storage, relative to it."""
        if self.s3 is None:
            root = Path(self.storage.uri.removeprefix("file://"))
            return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
        listing = self.s3.client().list_objects_v2(Bucket=self.bucket, Prefix=self.key(""))
        return {item["Key"].removeprefix(self.key("")) for item in listing.get("Contents", [])}


@pytest.fixture(params=["file", "s3"])
def place(request, tmp_path) -> tuple[Storage, Raw]:
    """The same tests on a folder and on a bucket prefix."""
    if request.param == "file":
        storage = Storage.local(tmp_path / "store")
        return storage, Raw(storage)
    s3 = request.getfixturevalue("s3")
    storage = Storage.parse(f"s3://{s3.bucket()}/runs/one")
    return storage, Raw(storage, s3)


def _state(torch: Any, n: int = 12) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(n)
    return {
        "model": {"w": torch.randn(n, 4, generator=generator), "steps": torch.arange(n)},
        "epoch": n,
        "best_val_dice": 0.25,
        "config_key": "k1",
    }


def _equal(torch: Any, a: dict[str, Any], b: dict[str, Any]) -> bool:
    same_tensors = all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    rest = [k for k in a if k != "model"]
    return same_tensors and set(a) == set(b) and all(a[k] == b[k] for k in rest)


def _one_line_error(call: Any, *named: str) -> str:
    """Run `call` (in a thread, so a hang fails the test instead of stalling it) and return the
    message of the CovbenchError it must raise: one line that names everything in `named`."""
    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            outcome["exc"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(BOUND)
    assert not thread.is_alive(), f"still running after {BOUND:.0f} s"
    exc = outcome.get("exc")
    assert isinstance(exc, CovbenchError), f"expected a CovbenchError, got {exc!r}"
    message = str(exc)
    assert "\n" not in message, message
    for text in named:
        assert text in message, f"{text!r} not in {message!r}"
    return message


# -- objects -------------------------------------------------------------------------------


def test_save_load_exists_fetch_remove_round_trip(place, torch, tmp_path, monkeypatch):
    storage, raw = place
    scratch = tmp_path / "tmpdir"  # where uploads and downloads keep their temporary copies
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    parts = ("trials", "unet__seed0__fold0", "checkpoint.pt")
    assert storage.load_torch(*parts) is None and not storage.exists(*parts)
    assert storage.fetch(*parts, to=tmp_path / "got" / "c.pt") is None
    assert not (tmp_path / "got" / "c.pt").exists()

    state = _state(torch)
    written = storage.save_torch(state, *parts)
    on_storage = raw.get("trials/unet__seed0__fold0/checkpoint.pt")
    assert on_storage is not None and written == len(on_storage) > 0
    assert storage.exists(*parts)
    assert _equal(torch, storage.load_torch(*parts), state)

    newer = _state(torch, 20)
    storage.save_torch(newer, *parts)  # replaces the object
    assert _equal(torch, storage.load_torch(*parts), newer)
    fetched = storage.fetch(*parts, to=tmp_path / "got" / "c.pt")
    assert fetched == tmp_path / "got" / "c.pt"
    assert fetched.read_bytes() == raw.get("trials/unet__seed0__fold0/checkpoint.pt")
    assert _equal(torch, torch.load(fetched, weights_only=True), newer)
    assert raw.names() == {"trials/unet__seed0__fold0/checkpoint.pt"}  # no temporary left anywhere

    storage.remove(*parts)
    assert not storage.exists(*parts) and storage.load_torch(*parts) is None
    assert raw.names() == set()
    storage.remove(*parts)  # already gone: fine
    assert list(scratch.iterdir()) == []  # every temporary copy deleted


def test_large_state_goes_up_in_parts_and_reads_back_equal(s3, torch):
    storage = Storage.parse(f"s3://{s3.bucket()}/big")
    state = {"model": {"w": torch.rand(int(2.5 * PART_BYTES) // 4)}, "epoch": 1}  # ~20 MB of float32
    written = storage.save_torch(state, "weights.pt")
    assert written > 2 * PART_BYTES
    head = s3.client().head_object(Bucket=Raw(storage).bucket, Key="big/weights.pt")
    assert head["ContentLength"] == written
    assert head["ETag"].strip('"').endswith("-3"), head["ETag"]  # a multipart upload of three parts
    loaded = storage.load_torch("weights.pt")
    assert torch.equal(loaded["model"]["w"], state["model"]["w"]) and loaded["epoch"] == 1


def test_a_damaged_object_raises_on_load_and_is_set_aside(place, torch):
    storage, raw = place
    raw.put("t/weights.pt", b"not a torch file at all")
    with pytest.raises(Exception):  # noqa: B017 - whatever torch raises; the caller sets it aside
        storage.load_torch("t", "weights.pt")

    with pytest.warns(RunFolderWarning, match="weights.pt is damaged; moved to weights.pt.corrupt"):
        assert storage.set_aside("t", "weights.pt", why="is damaged") == "weights.pt.corrupt"
    assert not storage.exists("t", "weights.pt") and storage.load_torch("t", "weights.pt") is None
    assert raw.get("t/weights.pt") is None
    assert raw.get("t/weights.pt.corrupt") == b"not a torch file at all"

    raw.put("t/weights.pt", b"damaged again")  # a second one keeps the first
    with pytest.warns(RunFolderWarning):
        assert storage.set_aside("t", "weights.pt", why="is damaged") == "weights.pt.corrupt.1"
    assert raw.names() == {"t/weights.pt.corrupt", "t/weights.pt.corrupt.1"}
    assert raw.get("t/weights.pt.corrupt.1") == b"damaged again"


def test_stale_temporaries_of_a_killed_writer_are_removed(place):
    storage, raw = place
    raw.put("t/.checkpoint.pt.x1y2.tmp", b"half")
    raw.put("t/checkpoint.pt", b"whole")
    storage.remove_stale_temporaries("t")
    if storage.is_local:
        assert raw.names() == {"t/checkpoint.pt"}
    else:  # object storage never holds a temporary of covbench's: nothing is touched
        assert raw.names() == {"t/.checkpoint.pt.x1y2.tmp", "t/checkpoint.pt"}


@pytest.mark.process
def test_another_process_reads_it_with_the_environment_alone(s3, torch, tmp_path):
    """What a Ray node does: no options, only the AWS variables (the endpoint among them)."""
    storage = Storage.parse(f"s3://{s3.bucket()}/shared")
    storage.save_torch(_state(torch), "t", "weights.pt")
    code = (
        "import sys; from covbench.folder.storage import Storage; "
        "s = Storage.parse(sys.argv[1]); print(s.load_torch('t', 'weights.pt')['epoch'])"
    )
    child = subprocess.run(
        [sys.executable, "-c", code, storage.uri],
        env={"PATH": "/usr/bin:/bin", **s3.env},
        capture_output=True,
        text=True,
        timeout=RUN_BOUND_S,
    )
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.strip() == "12"


# -- validate ------------------------------------------------------------------------------


def test_validate_passes_and_leaves_nothing(place):
    storage, raw = place
    storage.validate()
    assert raw.names() == set()


def test_validate_unreachable_endpoint(s3):
    port = free_port()  # nothing listens there: the connection is refused
    options = {"client_kwargs": {"endpoint_url": f"http://127.0.0.1:{port}"}}
    storage = Storage(f"s3://{s3.bucket()}/p", options)
    _one_line_error(storage.validate, storage.uri, f"cannot reach http://127.0.0.1:{port}", "refused")


def test_validate_unknown_host(s3):
    options = {
        "client_kwargs": {"endpoint_url": "http://no-such-host.invalid:9000"}
    }  # RFC 2606: never resolves
    storage = Storage(f"s3://{s3.bucket()}/p", options)
    _one_line_error(
        storage.validate, storage.uri, "cannot reach http://no-such-host.invalid:9000 (host name not"
    )


def test_validate_without_credentials(s3, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)  # the fixture's config files are empty and instance metadata is off
    storage = Storage.parse(f"s3://{s3.bucket()}/p")
    _one_line_error(storage.validate, storage.uri, "no credentials found: set AWS_ACCESS_KEY_ID")


def test_validate_missing_bucket(s3):
    storage = Storage.parse("s3://no-such-bucket-here/p")
    _one_line_error(storage.validate, storage.uri, "bucket no-such-bucket-here does not exist")


@pytest.fixture(scope="module")
def guarded():
    """A moto server in its own process that checks signatures and IAM policies."""
    pytest.importorskip("moto.server")
    with server_process(auth=True) as server:
        yield server


@pytest.mark.process
@pytest.mark.parametrize(
    "who, cause",
    [
        ("unknown key", "does not know the access key (bad credentials"),
        ("wrong secret", "secret key does not match the access key (bad credentials"),
        ("reader", "access denied"),
    ],
)
def test_validate_refused_credentials(guarded, who, cause):
    writer_key, _ = guarded.users["writer"]
    key, secret = {
        "unknown key": ("AKIAUNKNOWNUNKNOWN00", "s" * 40),
        "wrong secret": (writer_key, "s" * 40),
        "reader": guarded.users["reader"],  # may read, may not write
    }[who]
    storage = Storage(f"s3://{guarded.guarded}/p", guarded.options(key, secret))
    _one_line_error(storage.validate, storage.uri, cause)


@pytest.mark.process
def test_validate_passes_with_good_credentials_on_a_checking_server(guarded):
    """The control for the test above: the same server accepts a user who may write."""
    storage = Storage(f"s3://{guarded.guarded}/ok", guarded.options(*guarded.users["writer"]))
    storage.validate()


def test_validate_a_file_where_the_folder_should_be(tmp_path):
    (tmp_path / "taken").write_text("a file")
    for folder in (tmp_path / "taken", tmp_path / "taken" / "sub"):
        storage = Storage.local(folder)
        _one_line_error(storage.validate, storage.uri, "not a folder")


def test_validate_a_read_only_folder(tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders (tested above with a file in the way)")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        storage = Storage.local(folder)
        _one_line_error(storage.validate, storage.uri, "not writable: permission denied")
    finally:
        folder.chmod(0o700)


# -- lock ----------------------------------------------------------------------------------


def _holder(host: str) -> dict[str, Any]:
    command = ["/venv/bin/covbench", "run", "--storage", "s3://x"]
    return {"command": command, "pid": 4242, "host": host, "started": "2026-01-02T03:04:05+00:00"}


def test_a_second_lock_is_refused_naming_the_holder(place):
    storage, raw = place
    with storage.lock(_holder("node-a")):
        assert b'"node-a"' in raw.get(STORAGE_LOCK)
        message = _one_line_error(
            lambda: storage.lock(_holder("node-b")).__enter__(),
            f"--storage {storage.uri} is in use by `covbench run --storage s3://x`",
            "(pid 4242 on host node-a, since 2026-01-02T03:04:05+00:00)",
            f"if that run is gone, delete {storage.uri}/{STORAGE_LOCK}",
        )
        assert "node-b" not in message
        assert b'"node-a"' in raw.get(STORAGE_LOCK)  # the refused one overwrote nothing
    assert raw.get(STORAGE_LOCK) is None
    with storage.lock(_holder("node-b")):  # free again
        assert b'"node-b"' in raw.get(STORAGE_LOCK)


def test_the_lock_goes_when_its_block_fails(place):
    storage, raw = place
    with pytest.raises(RuntimeError, match="the run failed"), storage.lock(_holder("node-a")):
        raise RuntimeError("the run failed")
    assert raw.get(STORAGE_LOCK) is None


def test_a_lock_put_there_by_anyone_keeps_a_driver_out(place):
    storage, raw = place
    raw.put(STORAGE_LOCK, b"garbage")  # a lock the conditional create must not overwrite
    with pytest.raises(RunLocked, match="in use by another covbench"):
        with storage.lock(_holder("node-a")):
            pass
    assert raw.get(STORAGE_LOCK) == b"garbage"


def test_a_lock_that_cannot_be_created_is_one_line_not_in_use(tmp_path, s3):
    (tmp_path / "taken").write_text("a file")
    port = free_port()
    endpoint = {"endpoint_url": f"http://127.0.0.1:{port}"}
    once = {"retries": {"max_attempts": 1}}  # botocore's default five attempts take ~10 s to fail
    unreachable = Storage(f"s3://{s3.bucket()}/p", {"client_kwargs": endpoint, "config_kwargs": once})
    for storage, cause in [
        (Storage.local(tmp_path / "taken"), "not a folder"),
        (unreachable, f"cannot reach http://127.0.0.1:{port}"),
    ]:
        message = _one_line_error(
            lambda s=storage: s.lock(_holder("node-a")).__enter__(),
            storage.uri,
            f"cannot create {STORAGE_LOCK}",
            cause,
        )
        assert "in use" not in message


def test_of_racing_drivers_exactly_one_gets_the_lock(place):
    """Created only if absent, decided by the server: check-then-write would let several in."""
    storage, _ = place
    racers = 8
    start, done = threading.Barrier(racers), threading.Barrier(racers)
    winners: list[int] = []
    refused: list[int] = []

    def race(n: int) -> None:
        start.wait()
        try:
            with storage.lock(_holder(f"node-{n}")):
                winners.append(n)
                done.wait()  # held until every racer has tried
        except RunLocked:
            refused.append(n)
            done.wait()

    threads = [threading.Thread(target=race, args=(n,), daemon=True) for n in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BOUND)
    assert len(winners) == 1 and len(refused) == racers - 1, (winners, refused)


# -- parse and pickle ----------------------------------------------------------------------


def test_parse_normalises(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert Storage.parse("s3://bucket/pre/fix/").uri == "s3://bucket/pre/fix"
    assert Storage.parse(" S3://bucket ").uri == "s3://bucket"
    assert Storage.parse("runs/ckpt").uri == f"file://{tmp_path.resolve()}/runs/ckpt"
    assert Storage.parse(f"file://{tmp_path}/x/").uri == f"file://{tmp_path.resolve()}/x"
    local = Storage.parse(str(tmp_path))
    assert local.is_local and not Storage.parse("s3://b/p").is_local
    assert local == Storage.local(tmp_path)
    assert Storage.parse("s3://b/p").url("trials", "t", "weights.pt") == "s3://b/p/trials/t/weights.pt"


@pytest.mark.parametrize(
    "text, cause",
    [
        ("", "--storage is empty"),
        ("   ", "--storage is empty"),
        ("nosuch://bucket/p", "--storage nosuch://bucket/p: unknown protocol nosuch://"),
        ("s3://", "--storage s3://: no bucket; use s3://BUCKET/prefix"),
        ("s3:///prefix", "--storage s3:///prefix: no bucket"),
        ("file://host/folder", "--storage file://host/folder: a file URI names an absolute folder"),
    ],
)
def test_parse_refuses(text, cause):
    message = _one_line_error(lambda: Storage.parse(text), cause)
    assert message.startswith("--storage")


def test_parse_names_the_missing_backend(monkeypatch):
    monkeypatch.setitem(sys.modules, "s3fs", None)  # as if s3fs were not installed
    _one_line_error(
        lambda: Storage.parse("s3://b/p"), "--storage s3://b/p needs s3fs: pip install 'covbench[s3]'"
    )
    _one_line_error(lambda: Storage.parse("s3://b/p", option="storage"), "storage s3://b/p needs s3fs")


def test_it_pickles_small_without_a_filesystem(s3):
    storage = Storage.parse(f"s3://{s3.bucket()}/p")
    storage.exists("anything")  # this process now holds a live filesystem and client
    options = Storage("s3://b/p", {"anon": False, "client_kwargs": {"region_name": "eu-west-1"}})
    for item in (storage, options):
        data = pickle.dumps(item)
        assert pickle.loads(data) == item
        assert b"S3FileSystem" not in data and b"botocore" not in data and len(data) < 400
    assert hash(options) == hash(Storage("s3://b/p"))  # options are compared, never hashed
    assert options != Storage("s3://b/p")


def test_importing_it_loads_no_backend_and_no_torch():
    """The driver of a plain local run pays for neither; s3fs stays an extra (covbench[s3])."""
    code = (
        "import sys, covbench.folder.storage; print(sorted({'torch', 's3fs', 'botocore'} & set(sys.modules)))"
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=RUN_BOUND_S)
    assert child.returncode == 0, child.stderr[-2000:]
    assert child.stdout.strip() == "[]"
