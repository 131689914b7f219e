"""Where trials keep checkpoints and evaluated weights: a local folder or an object store.

`covbench run --storage URI` lets a cluster without a shared file system keep each trial's
`checkpoint.pt` and `weights.pt` on object storage, so a trial rescheduled on another node resumes
where the killed one stopped. `Storage` is the one object the runner, the Checkpointer and the
reports use for those files; it is a small frozen dataclass that travels to Ray workers inside each
trial's spec.

Why fsspec: one API for s3://, gs://, abfs:// and file://, with the backend (s3fs, gcsfs, adlfs)
installed only where it is used (`pip install 'covbench[s3]'`). A plain folder (file://) keeps
today's behaviour and code path: `covbench.folder.io.atomic_path` (unique temporary name, fsync,
rename) and `covbench.folder.io.set_aside`.

Why a temporary file and one upload on object storage: an object store has no rename, and an
object written in pieces would be seen half-written. `torch.save` goes to a local temporary file,
then one PUT (a multipart upload above `PART_BYTES` x 2) replaces the object: S3 makes an object
visible only when its PUT or CompleteMultipartUpload succeeds, so a reader sees the old object or
the new one, never a torn one. A writer killed mid-upload leaves no object, at most an incomplete
multipart upload (s3fs aborts it on an error, not on SIGKILL): a bucket lifecycle rule
(AbortIncompleteMultipartUpload) reclaims those.

Why a conditional PUT for the lock: two drivers on one prefix would train the same trials and
overwrite each other's checkpoints. `flock` does not exist on object storage; S3's conditional
write (`If-None-Match: *`, fsspec's `mode="create"`) creates `.covbench-lock` only if it is absent,
atomically on the server, so exactly one of two racing drivers wins. A lock left by a driver that
was killed stays until a user deletes it (the error says so); `validate` warns when an endpoint
ignores the condition, since then nothing keeps a second driver out.

What every node needs for s3:// (the driver and every Ray worker node, as for Ray's own
`storage_path`): the standard AWS variables, which botocore reads in each process -
AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE / an instance role), AWS_DEFAULT_REGION,
and for a server other than AWS (MinIO, Ceph, moto) AWS_ENDPOINT_URL or AWS_ENDPOINT_URL_S3
(botocore reads both since 1.31; covbench[s3] requires a newer one). Temporary files go to TMPDIR.
`validate` writes, reads and deletes a probe object before any training, so a wrong endpoint,
bucket or key fails the run at once in one line instead of in every trial.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import platform
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from covbench.errors import CovbenchError, RunFolderWarning, RunLocked
from covbench.folder.io import atomic_path
from covbench.folder.io import set_aside as set_aside_file
from covbench.folder.layout import STORAGE_LOCK

OPTION = "--storage"
PART_BYTES = 8 * 2**20  # S3 multipart part size (the AWS CLI's default); one PUT below twice this
_S3 = ("s3", "s3a")
# The probe must fail fast: a few seconds to connect and two attempts, not botocore's default
# 60 s timeouts times its retries.
_PROBE_S3 = {"connect_timeout": 5, "read_timeout": 20, "retries": {"max_attempts": 2}}
_INSTALL = {"s3fs": "pip install 'covbench[s3]'"}
# What S3 answers a conditional PUT whose object exists (412), or is being written by another (409)
_LOST_RACE = ("PreconditionFailed", "ConditionalRequestConflict")


class _Missing(Exception):
    """The object asked for does not exist (internal: turned into None)."""


@dataclass(frozen=True)
class Storage:
    """Picklable (it travels to Ray workers inside each trial's spec): a URI and fsspec options,
    never a live filesystem; each process opens its own (fsspec caches it per process)."""

    uri: str  # "file:///abs/path" or "s3://bucket/prefix": absolute, no trailing slash
    options: dict[str, Any] = field(default_factory=dict, hash=False)  # fsspec storage_options

    # -- naming ----------------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str, option: str = OPTION) -> Storage:
        """A folder or a URI, checked without touching the network (that is `validate`)."""
        raw = (text or "").strip()
        if not raw:
            raise CovbenchError(f"{option} is empty: give a folder or a URI such as s3://bucket/prefix")
        if "://" not in raw:
            return cls.local(Path(raw))
        protocol, _, rest = raw.partition("://")
        protocol = protocol.lower()
        if protocol in ("file", "local"):
            host, _, path = rest.partition("/")
            if host not in ("", "localhost"):
                raise CovbenchError(f"{option} {raw}: a file URI names an absolute folder: file:///path")
            return cls.local(Path("/" + path))
        from fsspec.registry import known_implementations, registry

        if protocol not in registry and protocol not in known_implementations:
            raise CovbenchError(
                f"{option} {raw}: unknown protocol {protocol}://; "
                "use s3://bucket/prefix, gs://bucket/prefix, file:///folder or a plain folder"
            )
        module = _missing_backend(protocol)
        if module:
            install = _INSTALL.get(module, f"pip install {module}")
            raise CovbenchError(f"{option} {raw} needs {module}: {install}")
        location = rest.rstrip("/")
        if not location or location.startswith("/"):
            raise CovbenchError(f"{option} {raw}: no bucket; use {protocol}://BUCKET/prefix")
        return cls(f"{protocol}://{location}")

    @classmethod
    def local(cls, folder: Path) -> Storage:
        return cls("file://" + Path(folder).expanduser().resolve().as_posix())

    @property
    def protocol(self) -> str:
        return self.uri.partition("://")[0]

    @property
    def is_local(self) -> bool:
        """A folder on this machine's file system (today's behaviour: fsync and rename)."""
        return self.protocol == "file"

    def url(self, *parts: str) -> str:
        return "/".join([self.uri, *parts])

    def child(self, *parts: str) -> Storage:
        """The storage under `parts` (a trial's own place: `child("trials", name)`)."""
        return Storage(self.url(*parts), self.options)

    def _path(self, *parts: str) -> Path:
        return Path(self.uri.removeprefix("file://"), *parts)

    @property
    def _fs(self) -> Any:
        import fsspec

        return fsspec.filesystem(self.protocol, **self.options)  # cached by fsspec, per process

    # -- objects ---------------------------------------------------------------------------

    def save_torch(self, state: dict[str, Any], *parts: str) -> int:
        """torch.save durably and atomically (see the module doc); the bytes written."""
        import torch

        if self.is_local:
            with atomic_path(self._path(*parts)) as tmp:
                torch.save(state, tmp)
                return tmp.stat().st_size
        with _temporary() as tmp:
            torch.save(state, tmp)
            size = tmp.stat().st_size
            extra = {"chunksize": PART_BYTES} if self.protocol in _S3 else {}
            self._fs.put_file(str(tmp), self.url(*parts), **extra)
            return size

    def load_torch(self, *parts: str) -> dict[str, Any] | None:
        """The saved state, or None when there is none; a damaged object raises (from torch)."""
        import torch

        if self.is_local:
            path = self._path(*parts)
            if not path.exists():
                return None
            return torch.load(path, map_location="cpu", weights_only=True)
        with _temporary() as tmp:
            if not self._download(parts, tmp):
                return None
            return torch.load(tmp, map_location="cpu", weights_only=True)

    def exists(self, *parts: str) -> bool:
        if self.is_local:
            return self._path(*parts).exists()
        return self._remote_exists(self.url(*parts))

    def _remote_exists(self, url: str) -> bool:
        self._fs.invalidate_cache(url)  # another process may have written or deleted it since
        return bool(self._fs.exists(url))

    def remove(self, *parts: str) -> None:
        if self.is_local:
            self._path(*parts).unlink(missing_ok=True)
            return
        try:
            self._fs.rm_file(self.url(*parts))
        except FileNotFoundError:
            pass

    def set_aside(self, *parts: str, why: str) -> str:
        """Move a damaged object to NAME.corrupt (NAME.corrupt.1, ...) with a RunFolderWarning;
        its new name. Kept, not deleted: it may be all that is left of a result."""
        if self.is_local:
            return set_aside_file(self._path(*parts), why).name
        url = self.url(*parts)
        fs = self._fs
        target, n = f"{url}.corrupt", 0
        while self._remote_exists(target):
            n += 1
            target = f"{url}.corrupt.{n}"
        fs.copy(url, target)  # no rename on object storage: copy, then delete
        fs.rm_file(url)
        name = target.rsplit("/", 1)[-1]
        warnings.warn(f"{url} {why}; moved to {name}", RunFolderWarning, stacklevel=2)
        return name

    def fetch(self, *parts: str, to: Path) -> Path | None:
        """Copy the object to the local file `to` (atomically); None when there is no object."""
        to = Path(to)
        try:
            with atomic_path(to) as tmp:
                if not self._download(parts, tmp):
                    raise _Missing
        except _Missing:
            return None
        return to

    def remove_stale_temporaries(self, *parts_of_folder: str) -> None:
        """Delete the `.NAME.*.tmp` files a killed writer left in a local folder. Object storage
        has none: an upload that did not complete never becomes an object."""
        if self.is_local:
            for stale in self._path(*parts_of_folder).glob(".*.tmp"):
                stale.unlink(missing_ok=True)

    def _download(self, parts: tuple[str, ...], dest: Path) -> bool:
        """Copy the object to `dest`; False when it does not exist."""
        try:
            if self.is_local:
                shutil.copyfile(self._path(*parts), dest)
            else:
                url = self.url(*parts)
                self._fs.invalidate_cache(url)
                self._fs.get_file(url, str(dest))
        except FileNotFoundError:
            return False
        return True

    # -- before a run ----------------------------------------------------------------------

    def validate(self) -> None:
        """Write, read back and delete a probe object; any failure is one CovbenchError line that
        names the URI and the cause. Run on the driver before any training."""
        probe = f".covbench-probe-{uuid.uuid4().hex}"
        data = b"covbench probe\n"
        try:
            if self.is_local:
                _probe_folder(self._path(), probe, data)
                return
            fs = self._probe_fs()
            url = self.url(probe)
            fs.pipe_file(url, data, mode="create")
            try:
                if fs.cat_file(url) != data:
                    raise CovbenchError(f"{OPTION} {self.uri}: a probe object read back different bytes")
                conditional = _refuses_second_create(fs, url, data)
            finally:
                fs.rm_file(url)
        except CovbenchError:
            raise
        except Exception as exc:
            raise CovbenchError(f"{OPTION} {self.uri}: {describe_failure(exc, self.uri)}") from None
        if not conditional:
            warnings.warn(
                f"{OPTION} {self.uri}: the server ignores conditional writes (If-None-Match), so nothing "
                "keeps a second covbench from writing this prefix at the same time",
                RunFolderWarning,
                stacklevel=2,
            )

    def _probe_fs(self) -> Any:
        """A fresh filesystem with short timeouts and few retries, and the environment as it is now."""
        import fsspec

        options: dict[str, Any] = {**self.options, "skip_instance_cache": True}
        if self.protocol in _S3:
            options["config_kwargs"] = {**_PROBE_S3, **options.get("config_kwargs", {})}
        fs = fsspec.filesystem(self.protocol, **options)
        if hasattr(fs, "retries"):
            fs.retries = 1  # s3fs's own retry loop, on top of botocore's
        return fs

    @contextmanager
    def lock(self, holder: dict[str, Any]) -> Iterator[None]:
        """Hold `<uri>/.covbench-lock` for the block, or raise RunLocked (a CovbenchError) at once
        naming its holder. Created only if absent (O_EXCL; a conditional PUT on object storage);
        removed on exit, also on an exception."""
        content = json.dumps(holder, default=str, sort_keys=True).encode() + b"\n"
        try:
            created = self._create_lock(content)
        except Exception as exc:  # unreachable, refused, not a folder: never a traceback
            why = describe_failure(exc, self.uri)
            raise CovbenchError(f"{OPTION} {self.uri}: cannot create {STORAGE_LOCK}: {why}") from None
        if not created and _left_by_a_dead_process(self._holder()):
            # A driver of this host that died without letting go (SIGKILL, the OOM killer): the
            # lock is stale for sure, and taking it over is what its user would do by hand.
            stale = self._holder()
            self.remove(STORAGE_LOCK)
            created = self._create_lock(content)
            if created:
                warnings.warn(
                    f"{self.url(STORAGE_LOCK)} was left by {describe_holder(stale)}, which is gone; "
                    "taken over",
                    RunFolderWarning,
                    stacklevel=3,
                )
        if not created:
            raise RunLocked(
                f"{OPTION} {self.uri} is in use by {describe_holder(self._holder())}; "
                f"if that run is gone, delete {self.url(STORAGE_LOCK)}"
            )
        try:
            yield
        finally:
            self._release_lock(content)

    def _create_lock(self, content: bytes) -> bool:
        """Create the lock if it is absent, decided atomically by the file system or the server;
        False when it exists (or another driver's conditional PUT of it is under way)."""
        if self.is_local:
            self._path().mkdir(parents=True, exist_ok=True)  # a file in the way raises here
            try:
                _create_exclusive(self._path(STORAGE_LOCK), content)
            except FileExistsError:
                return False
            return True
        try:
            self._fs.pipe_file(self.url(STORAGE_LOCK), content, mode="create")
        except FileExistsError:
            return False
        except OSError as exc:
            if _code(exc) in _LOST_RACE:
                return False
            raise
        return True

    def _release_lock(self, content: bytes) -> None:
        """Delete the lock if it is still ours; a failure only warns (the block's outcome wins)."""
        try:
            if self._read_lock() == content:  # never delete a lock another driver took since
                self.remove(STORAGE_LOCK)
        except Exception as exc:
            warnings.warn(
                f"{OPTION} {self.uri}: could not remove {STORAGE_LOCK} ({describe_failure(exc, self.uri)}); "
                f"delete {self.url(STORAGE_LOCK)} before the next run",
                RunFolderWarning,
                stacklevel=2,
            )

    def _read_lock(self) -> bytes | None:
        try:
            if self.is_local:
                return self._path(STORAGE_LOCK).read_bytes()
            self._fs.invalidate_cache(self.url(STORAGE_LOCK))
            return self._fs.cat_file(self.url(STORAGE_LOCK))
        except (OSError, ValueError):
            return None

    def _holder(self) -> dict[str, Any] | None:
        try:
            info = json.loads(self._read_lock() or b"null")
        except ValueError:
            return None
        return info if isinstance(info, dict) else None


# -- helpers ---------------------------------------------------------------------------------


def _left_by_a_dead_process(holder: dict[str, Any] | None) -> bool:
    """Whether a lock's holder ran on this host and its process is gone (a crashed driver); a
    holder on another host cannot be checked from here and counts as alive."""
    if not holder or holder.get("host") != platform.node() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, owned by another user
        return False
    return False


def _missing_backend(protocol: str) -> str | None:
    """The package a protocol needs and this environment lacks (found without importing it)."""
    from fsspec.registry import known_implementations

    if protocol not in known_implementations:  # registered at run time with its class: present
        return None
    module = known_implementations[protocol]["class"].split(".")[0]
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: sys.modules[module] is None (import blocked)
        found = False
    return None if found else module


@contextmanager
def _temporary() -> Iterator[Path]:
    """A local temporary file (in TMPDIR), deleted after the block."""
    fd, name = tempfile.mkstemp(prefix="covbench-", suffix=".pt")
    os.close(fd)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def _create_exclusive(path: Path, content: bytes) -> None:
    """Write a new file, or raise FileExistsError: O_EXCL decides, atomically."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)


def _probe_folder(folder: Path, probe: str, data: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / probe
    try:
        _create_exclusive(path, data)
        if path.read_bytes() != data:
            raise CovbenchError(f"{OPTION} file://{folder}: a probe file read back different bytes")
    finally:
        path.unlink(missing_ok=True)


def _refuses_second_create(fs: Any, url: str, data: bytes) -> bool:
    """Whether a second exclusive create of an existing object fails, as the lock relies on."""
    try:
        fs.pipe_file(url, data, mode="create")
    except FileExistsError:
        return True
    except OSError as exc:
        return _code(exc) in _LOST_RACE
    return False


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception, its causes and contexts (botocore's and aiohttp's are often two deep)."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < 20:
        item = todo.pop(0)
        if item is None or any(item is s for s in seen):
            continue
        seen.append(item)
        todo += [item.__cause__, item.__context__]
    return seen


def _code(exc: BaseException) -> str | None:
    """The S3 error code of a botocore ClientError in the chain (NoSuchBucket, AccessDenied, ...)."""
    for item in _chain(exc):
        response = getattr(item, "response", None)
        if isinstance(response, dict) and isinstance(response.get("Error"), dict):
            return str(response["Error"].get("Code") or "") or None
    return None


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for item in _chain(exc) for cls in type(item).__mro__}


def _endpoint(exc: BaseException) -> str:
    for item in _chain(exc):
        url = (getattr(item, "kwargs", None) or {}).get("endpoint_url")
        if url:
            parts = urlsplit(str(url))
            return f"{parts.scheme}://{parts.netloc}"
    return "the endpoint"


_CREDENTIALS = "bad credentials: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
_BY_CODE = {
    "InvalidAccessKeyId": f"the server does not know the access key ({_CREDENTIALS})",
    "SignatureDoesNotMatch": f"the secret key does not match the access key ({_CREDENTIALS})",
    "InvalidToken": f"the session token is not valid ({_CREDENTIALS} and AWS_SESSION_TOKEN)",
    "ExpiredToken": "the session token has expired: renew the credentials",
    "AccessDenied": "access denied: the credentials may not write, read and delete objects there "
    "(s3:PutObject, s3:GetObject, s3:DeleteObject)",
    "AllAccessDisabled": "access to the bucket is disabled",
}


def describe_failure(exc: BaseException, uri: str) -> str:
    """What went wrong, in words a user can act on, on one line."""
    code = _code(exc)
    names = _names(exc)
    if code == "NoSuchBucket" or "NoSuchBucket" in names:
        bucket = uri.partition("://")[2].split("/")[0]
        return f"bucket {bucket} does not exist: create it, or fix the name"
    if code in _BY_CODE:
        return _BY_CODE[code]
    if code:
        message = _first_line(exc)
        return f"the server refused ({code}: {message})"
    if names & {"NoCredentialsError", "PartialCredentialsError"}:
        return "no credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY on every node"
    unreachable = {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionError"}
    unreachable |= {"ClientConnectorError", "ServerTimeoutError", "TimeoutError", "gaierror"}
    if names & unreachable or "ConnectionRefusedError" in names:
        why = "connection refused" if "ConnectionRefusedError" in names else "no connection"
        if names & {"gaierror", "ClientConnectorDNSError"}:
            why = "host name not found"
        elif names & {"ConnectTimeoutError", "ServerTimeoutError", "TimeoutError"}:
            why = "timed out"
        return f"cannot reach {_endpoint(exc)} ({why}): check AWS_ENDPOINT_URL and that the server is up"
    if isinstance(exc, OSError):
        return _local_failure(exc)
    return f"{type(exc).__name__}: {_first_line(exc)}"


def _local_failure(exc: OSError) -> str:
    where = f" ({exc.filename})" if exc.filename else ""
    if exc.errno in (errno.EACCES, errno.EPERM):
        return f"not writable: permission denied{where}"
    if exc.errno == errno.EROFS:
        return f"not writable: read-only file system{where}"
    if exc.errno in (errno.ENOTDIR, errno.EEXIST):
        return f"not a folder: a file is in the way{where}"
    if exc.errno == errno.ENOSPC:
        return f"no space left on the device{where}"
    if isinstance(exc, FileNotFoundError) and not exc.errno:
        return "not found (a missing bucket or path)"
    if isinstance(exc, PermissionError) and not exc.errno:
        return "access denied: check the credentials and the bucket's policy"
    return f"{exc.strerror or type(exc).__name__}{where}" if exc.errno else _first_line(exc)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def describe_holder(info: dict[str, Any] | None) -> str:
    """Who holds a lock, from the holder dict it wrote (command, pid, host, started)."""
    if not info:
        return "another covbench (it has not said which)"
    command = info.get("command") or ""
    if isinstance(command, list | tuple):
        argv = [str(a) for a in command]
        command = " ".join([Path(argv[0]).name, *argv[1:]]) if argv else ""
    command = str(command) if len(str(command)) <= 100 else str(command)[:97] + "..."
    what = f"`{command}`" if command else "another covbench"
    since = info.get("started", info.get("since"))
    return f"{what} (pid {info.get('pid')} on host {info.get('host')}, since {since})"
