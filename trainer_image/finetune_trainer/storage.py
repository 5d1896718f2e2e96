"""Object storage for the trainer: s3:// models, data and outputs on AWS S3 or any S3-compatible store.

Where and who: the standard AWS variables, which botocore reads by itself and a job's
spec.secrets.s3Credentials Secret provides (envFrom): AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN, AWS_DEFAULT_REGION, and AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_S3) for MinIO, Ceph,
R2 or moto; a custom endpoint is addressed path-style (http://host:port/bucket/key).

What can go wrong becomes one of the StorageFailure classes of errors.py, naming the URI and the store's
error code, never a credential. Retries are bounded, in two layers: botocore retries each request
(standard mode, REQUEST_ATTEMPTS, or AWS_MAX_ATTEMPTS / AWS_RETRY_MODE when set), and each object's
transfer or listing page is tried ATTEMPTS times with exponential backoff for what stays transient
(throttling, 5xx, no connection, a body cut short); then StorageUnavailable, which the Job retries.
Denied access and missing buckets or keys are never retried. Uploads only ever add or replace objects.

The API, for the trainer's sources and its checkpoint streaming:
    download(uri, cache_root, what=...)   -> local path of the object or folder (a cached, whole copy)
    upload_file(path, uri, what=...)      -> None
    upload_tree(folder, uri, what=..., last=(...)) -> keys written, the `last` files after all others
    list_files(uri, what=...)             -> {relative path: size} of the objects under the folder uri
    delete_tree(uri, what=...)            -> number of objects deleted (pruning old checkpoints)
    check_location(uri, what=...)         -> None once the bucket answers to these credentials
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlparse

import aiohttp
import botocore.exceptions
import s3fs
from fsspec.exceptions import FSTimeoutError

from finetune_trainer.errors import (
    InvalidData,
    StorageAccessDenied,
    StorageFailure,
    StorageNotFound,
    StorageRequestRejected,
    StorageUnavailable,
)

logger = logging.getLogger("finetune_trainer.storage")

# Tries of one object's transfer (or one listing page), and the backoff between them: 2, 4, 8, 16 s,
# each jittered down to half so that the ranks of a job throttled together do not come back together.
ATTEMPTS = 5
FIRST_DELAY_SECONDS = 2.0
MAX_DELAY_SECONDS = 30.0
# botocore's own tries of each request (standard mode: throttling, 5xx and connection errors), unless the
# job sets AWS_MAX_ATTEMPTS or AWS_RETRY_MODE; s3fs's third layer of retries is switched off.
REQUEST_ATTEMPTS = 3
# botocore's default is 60 s; an endpoint that drops packets should fail an attempt sooner than that.
CONNECT_TIMEOUT_SECONDS = 10
READ_TIMEOUT_SECONDS = 60
DELETE_BATCH = 1000  # the most keys one DeleteObjects request takes

# Patched by tests so that backoff costs no time.
sleep = time.sleep
jitter = random.random

# The store's error codes by what they mean (AWS S3's documented codes; MinIO, Ceph and R2 use the same).
ACCESS_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "AccountProblem",
        "ExpiredToken",
        "InvalidAccessKeyId",
        "InvalidSecurity",
        "InvalidToken",
        "RequestTimeTooSkewed",
        "SignatureDoesNotMatch",
        "TokenRefreshRequired",
    }
)
NOT_FOUND_CODES = frozenset({"NoSuchBucket", "NoSuchKey", "NotFound", "NoSuchUpload"})
UNAVAILABLE_CODES = frozenset(
    {
        "BandwidthLimitExceeded",
        "InternalError",
        "OperationAborted",
        "RequestLimitExceeded",
        "RequestTimeout",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "TooManyRequests",
        "TooManyRequestsException",
    }
)
# What a user can do about one code; the operator adds its reason's general hint (reasons.FAILURE_HINTS).
_ADVICE = {
    "AccessDenied": "these credentials may not {verb} here: reading needs s3:ListBucket and s3:GetObject, "
    "writing s3:PutObject (and s3:DeleteObject to prune)",
    "InvalidAccessKeyId": "the store at {endpoint} does not know the key in AWS_ACCESS_KEY_ID",
    "SignatureDoesNotMatch": "AWS_SECRET_ACCESS_KEY is not the secret of AWS_ACCESS_KEY_ID",
    "ExpiredToken": "AWS_SESSION_TOKEN has expired; give the job fresh credentials",
    "InvalidToken": "AWS_SESSION_TOKEN is not valid for these keys",
    "RequestTimeTooSkewed": "the node's clock is too far from the store's",
    "NoCredentials": "no credentials were found: put AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the Secret "
    "named by spec.secrets.s3Credentials",
    "PartialCredentials": "only part of a key pair was found: set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
    "NoSuchBucket": "create bucket {bucket} at {endpoint}, or fix the bucket in the URI",
    "NoSuchKey": "check the path (keys are case-sensitive)",
    "PermanentRedirect": "the bucket lives in another region: set AWS_DEFAULT_REGION to it",
    "AuthorizationHeaderMalformed": "the bucket lives in another region: set AWS_DEFAULT_REGION to it",
    "InvalidObjectState": "the object is archived (Glacier); restore it first",
    "SSLError": "the endpoint's TLS certificate was not accepted: set AWS_CA_BUNDLE to its CA's certificate",
}
_VERBS = {"listing": "list", "downloading": "read", "uploading": "write", "deleting": "delete"}
# Whose values never appear in a message, should a store ever echo one back.
_CREDENTIAL_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
# S3 bucket names: 3-63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_USERINFO = re.compile(r"//[^/@]*@")

T = TypeVar("T")


@dataclass(frozen=True)
class S3Location:
    """s3://bucket/key, with the key's slashes at either end removed ("" for the whole bucket)."""

    bucket: str
    key: str

    @classmethod
    def parse(cls, uri: str, what: str = "location") -> S3Location:
        parsed = urlparse(uri)
        if parsed.scheme != "s3":
            raise InvalidData(f"{what} {uri}: not an s3:// URI; expected s3://BUCKET/PREFIX")
        if not _BUCKET.fullmatch(parsed.netloc or ""):
            raise InvalidData(
                f"{what} {uri}: {parsed.netloc!r} is not an S3 bucket name (3-63 lowercase letters, digits, dots "
                "and hyphens); expected s3://BUCKET/PREFIX, e.g. s3://my-models/bert-base"
            )
        return cls(parsed.netloc, parsed.path.strip("/"))

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}" if self.key else f"s3://{self.bucket}"

    @property
    def path(self) -> str:
        """bucket/key, the path s3fs works with."""
        return f"{self.bucket}/{self.key}" if self.key else self.bucket

    def child(self, relative: str) -> S3Location:
        return S3Location(self.bucket, f"{self.key}/{relative}" if self.key else relative)

    @property
    def folder_prefix(self) -> str:
        """The prefix of the objects "inside" this location, as S3 lists them."""
        return f"{self.key}/" if self.key else ""


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    etag: str


# --- the client ---------------------------------------------------------------------------------------


def filesystem() -> s3fs.S3FileSystem:
    """A new s3fs client, configured by the AWS_* variables of this process (see the module's docstring).

    Not s3fs's cached instance: that one keeps the credentials and endpoint it was first made with."""
    check_endpoint()
    config: dict = {"connect_timeout": CONNECT_TIMEOUT_SECONDS, "read_timeout": READ_TIMEOUT_SECONDS}
    if not (os.environ.get("AWS_MAX_ATTEMPTS") or os.environ.get("AWS_RETRY_MODE")):
        config["retries"] = {"mode": "standard", "total_max_attempts": REQUEST_ATTEMPTS}
    fs = s3fs.S3FileSystem(skip_instance_cache=True, config_kwargs=config)
    fs.retries = 1  # a class attribute, not a constructor argument: s3fs tries each call once, with_retries again
    return fs


def endpoint_variable(environ=os.environ) -> tuple[str, str] | None:
    """(name, value) of the endpoint variable botocore uses for S3, the service-specific one first."""
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if environ.get(name):
            return name, environ[name]
    return None


def endpoint_description(environ=os.environ) -> str:
    """The store's endpoint as a message may show it: without any user:password part."""
    variable = endpoint_variable(environ)
    return _USERINFO.sub("//", variable[1]) if variable else "AWS S3"


def check_endpoint(environ=os.environ) -> None:
    """InvalidData naming the variable when the endpoint is not an http(s) URL (botocore's own error names none)."""
    variable = endpoint_variable(environ)
    if variable is None:
        return
    name, value = variable
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise InvalidData(
            f"{name} {_USERINFO.sub('//', value)!r} is not an http(s) URL; expected e.g. http://minio.minio.svc:9000 "
            "or https://ACCOUNT.r2.cloudflarestorage.com"
        )


# --- failures -----------------------------------------------------------------------------------------


def _error_code(exc: BaseException) -> tuple[str | None, int | None, str]:
    """(the store's error code, HTTP status, its message) of the botocore ClientError behind `exc`, if any."""
    for link in _chain(exc):
        if isinstance(link, botocore.exceptions.ClientError):
            error = link.response.get("Error") or {}
            status = (link.response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            code = error.get("Code")
            # A HEAD request's error has no body: botocore gives the status as its code ("404").
            if code and code.isdigit():
                code = {"403": "AccessDenied", "404": "NotFound"}.get(code, code)
            return code, status, error.get("Message") or ""
    return None, None, ""


def _chain(exc: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__


def _transport_code(exc: BaseException) -> tuple[type[StorageFailure], str] | None:
    """A failure below HTTP (no credentials, no connection, a timeout): its class and the client's name for it."""
    for link in _chain(exc):
        if isinstance(link, (botocore.exceptions.NoCredentialsError, botocore.exceptions.CredentialRetrievalError)):
            return StorageAccessDenied, "NoCredentials"
        if isinstance(link, botocore.exceptions.PartialCredentialsError):
            return StorageAccessDenied, "PartialCredentials"
        if isinstance(link, botocore.exceptions.SSLError):
            return StorageRequestRejected, "SSLError"
        if isinstance(
            link,
            (
                botocore.exceptions.ConnectionError,
                botocore.exceptions.HTTPClientError,
                botocore.exceptions.IncompleteReadError,
                aiohttp.ClientConnectionError,
                aiohttp.ClientPayloadError,
                FSTimeoutError,
                asyncio.TimeoutError,
                socket.timeout,
                ConnectionError,
            ),
        ):
            return StorageUnavailable, type(link).__name__
    return None


def failure_class(code: str | None, status: int | None) -> type[StorageFailure]:
    """Which failure a store's error code (or, for codes not listed, its HTTP status) is. Pure."""
    if code in ACCESS_CODES:
        return StorageAccessDenied
    if code in NOT_FOUND_CODES:
        return StorageNotFound
    if code in UNAVAILABLE_CODES:
        return StorageUnavailable
    if status in (401, 403):
        return StorageAccessDenied
    if status == 404:
        return StorageNotFound
    if status == 429 or (status or 0) >= 500:
        return StorageUnavailable
    return StorageRequestRejected


def scrub(text: str, environ=os.environ) -> str:
    """`text` without the values of this process's credential variables."""
    for name in _CREDENTIAL_VARIABLES:
        value = environ.get(name)
        if value and len(value) >= 4:
            text = text.replace(value, f"<{name}>")
    return text


def storage_failure(
    exc: BaseException, location: S3Location, *, what: str, action: str, environ=os.environ
) -> StorageFailure | None:
    """The StorageFailure that `exc`, raised while `action` (listing, downloading, ...) `location`, stands
    for; None when `exc` is no storage failure (a full local disk, a bug), to be raised as it is."""
    if isinstance(exc, StorageFailure):
        return exc  # already sorted (a nested call)
    code, status, store_message = _error_code(exc)
    if code is not None or status is not None:
        kind = failure_class(code, status)
        code = code or f"HTTP{status}"
    else:
        transport = _transport_code(exc)
        if transport is None:
            return None
        kind, code = transport
    endpoint = endpoint_description(environ)
    said = {
        StorageAccessDenied: "the store refused access",
        StorageNotFound: "not found",
        StorageUnavailable: f"the store at {endpoint} is unavailable",
        StorageRequestRejected: "the store rejected the request",
    }[kind]
    detail = f"{code}: {scrub(store_message, environ)}" if store_message else code
    message = f"{what} {location}: {said} while {action} ({detail})"
    advice = _ADVICE.get(code)
    if advice:
        message += "; " + advice.format(verb=_VERBS.get(action, action), endpoint=endpoint, bucket=location.bucket)
    return kind(message, uri=str(location), code=code)


def with_retries(call: Callable[[], T], location: S3Location, *, what: str, action: str) -> T:
    """`call()`, tried again with exponential backoff while it fails transiently (ATTEMPTS in all);
    any failure leaves as a StorageFailure (or as it came, when it is no storage failure)."""
    started = time.monotonic()
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - storage_failure sorts them; anything else is re-raised as is
            failure = storage_failure(exc, location, what=what, action=action)
            if failure is None:
                raise
            if failure is exc:
                raise
            if failure.final:
                raise failure from exc
            if attempt == ATTEMPTS:
                spent = time.monotonic() - started
                raise type(failure)(
                    f"{failure}; still so after {ATTEMPTS} attempts in {spent:.0f} s",
                    uri=failure.uri,
                    code=failure.code,
                ) from exc
            delay = backoff_delay(attempt)
            logger.warning("%s; attempt %d of %d, trying again in %.1f s", failure, attempt, ATTEMPTS, delay)
            sleep(delay)
    raise AssertionError("unreachable")  # the loop returns or raises


def backoff_delay(attempt: int) -> float:
    """Seconds to wait after failed attempt `attempt` (1-based): doubling from FIRST_DELAY_SECONDS up to
    MAX_DELAY_SECONDS, jittered down by at most half."""
    ceiling = min(MAX_DELAY_SECONDS, FIRST_DELAY_SECONDS * 2 ** (attempt - 1))
    return ceiling * (0.5 + 0.5 * jitter())


# --- listing ------------------------------------------------------------------------------------------


def _list(fs, location: S3Location, prefix: str, *, what: str, limit: int | None = None) -> list[StoredObject]:
    """The objects whose keys start with `prefix`, page by page (each page tried with with_retries)."""
    found: list[StoredObject] = []
    token = None
    while True:
        request = {"Bucket": location.bucket, "Prefix": prefix}
        if limit:
            request["MaxKeys"] = limit
        if token:
            request["ContinuationToken"] = token
        page = with_retries(
            lambda request=request: fs.call_s3("list_objects_v2", **request), location, what=what, action="listing"
        )
        found += [
            StoredObject(item["Key"], int(item["Size"]), item.get("ETag", "")) for item in page.get("Contents", ())
        ]
        token = page.get("NextContinuationToken")
        if not token or (limit and len(found) >= limit):
            return found


def _relative(location: S3Location, key: str, what: str) -> str:
    """`key`'s path below `location`, refused when it would leave the folder it is copied into."""
    relative = key[len(location.folder_prefix) :]
    parts = relative.split("/")
    if relative.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise InvalidData(
            f"{what} {location}: object key {key!r} cannot be a file name below a folder (empty, '.' or '..' parts); "
            "rename the object"
        )
    return relative


def _objects(fs, location: S3Location, what: str) -> tuple[dict[str, StoredObject], bool]:
    """({relative path: object} of what `location` names, whether it is a folder); a file has path ""."""
    inside = [o for o in _list(fs, location, location.folder_prefix, what=what) if not o.key.endswith("/")]
    if inside:
        return {_relative(location, o.key, what): o for o in inside}, True
    if location.key:
        # Keys sort by bytes: a key sorts before every longer key that starts with it ("model" < "model-v2/...").
        first = _list(fs, location, location.key, what=what, limit=1)
        if first and first[0].key == location.key:
            return {"": first[0]}, False
    where = "the bucket is empty" if not location.key else "no object at this key or under it"
    raise StorageNotFound(
        f"{what} {location}: not found ({where}: NoSuchKey); check the path (keys are case-sensitive)",
        uri=str(location),
        code="NoSuchKey",
    )


def list_files(uri: str, *, what: str = "output") -> dict[str, int]:
    """{path below the folder `uri`: size} of every object under it; {} when there are none.

    StorageNotFound when the bucket does not exist; other failures as with_retries raises them."""
    location = S3Location.parse(uri, what)
    fs = filesystem()
    return {
        _relative(location, o.key, what): o.size
        for o in _list(fs, location, location.folder_prefix, what=what)
        if not o.key.endswith("/")
    }


def check_location(uri: str, *, what: str = "output") -> None:
    """Fail early (before hours of training) when the bucket of `uri` is missing or refuses these credentials.

    One listing request (s3:ListBucket); whether the credentials may also write shows at the first upload."""
    location = S3Location.parse(uri, what)
    _list(filesystem(), location, location.folder_prefix, what=what, limit=1)


# --- transfers ----------------------------------------------------------------------------------------


def download(uri: str, cache_root: str, *, what: str = "data") -> str:
    """A local copy of the object or folder at `uri`; its path keeps the key's last name (train.csv, model/).

    Copies live under `cache_root` in a folder named by the listing's digest (keys, sizes and ETags), made
    whole or not at all (downloaded beside it, then renamed): a process, or another rank of the pod, that
    finds it uses it, and a changed object is a new digest, never a stale copy."""
    location = S3Location.parse(uri, what)
    fs = filesystem()
    name = location.key.rsplit("/", 1)[-1] if location.key else location.bucket
    try:
        objects, is_folder = _objects(fs, location, what)
    except StorageAccessDenied as denied:
        if not location.key or denied.code != "AccessDenied":  # bad keys stay bad keys for a GET
            raise
        # Read-only policies often grant s3:GetObject without s3:ListBucket: the key may still be a file.
        return _download_unlisted(fs, location, cache_root, name, what, denied)
    listing = "\n".join(f"{path}\t{o.key}\t{o.size}\t{o.etag}" for path, o in sorted(objects.items()))
    digest = hashlib.sha256(f"{location}\n{listing}".encode()).hexdigest()[:20]
    final = os.path.join(cache_root, digest)
    if os.path.isdir(final):
        logger.info("%s %s: using the copy in %s", what, location, final)
        return os.path.join(final, name)
    os.makedirs(cache_root, exist_ok=True)
    partial = tempfile.mkdtemp(prefix=f"{digest}.partial-", dir=cache_root)
    started = time.monotonic()
    try:
        for path, stored in sorted(objects.items()):
            target = os.path.join(partial, name, *path.split("/")) if is_folder else os.path.join(partial, name)
            _get(fs, S3Location(location.bucket, stored.key), target, what)
        try:
            os.rename(partial, final)
        except OSError:
            if not os.path.isdir(final):  # else another process put the same copy in place first
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    size = sum(o.size for o in objects.values())
    logger.info(
        "%s %s: downloaded %d object(s), %d bytes, in %.1f s",
        what,
        location,
        len(objects),
        size,
        time.monotonic() - started,
    )
    return os.path.join(final, name)


def _get(fs, source: S3Location, target: str, what: str) -> None:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with_retries(lambda: fs.get_file(source.path, target), source, what=what, action="downloading")


def _download_unlisted(fs, location: S3Location, cache_root: str, name: str, what: str, denied: StorageFailure) -> str:
    """The object at `location` read without a listing, into a folder of its own (no digest to share)."""
    os.makedirs(cache_root, exist_ok=True)
    folder = tempfile.mkdtemp(prefix="unlisted-", dir=cache_root)
    try:
        _get(fs, location, os.path.join(folder, name), what)
    except StorageFailure as failure:
        shutil.rmtree(folder, ignore_errors=True)
        if not isinstance(failure, StorageAccessDenied):
            raise
        # S3 answers AccessDenied for a missing key to whoever may not list the bucket: say both.
        raise StorageAccessDenied(
            f"{failure}; listing was refused as well ({denied.code}), so a missing key also reads as AccessDenied",
            uri=failure.uri,
            code=failure.code,
        ) from failure
    logger.info("%s %s: read as one object without listing (%s)", what, location, denied.code)
    return os.path.join(folder, name)


def upload_file(local_path: str, uri: str, *, what: str = "output") -> None:
    """Write one local file to the object `uri` (replacing an object of that key)."""
    location = S3Location.parse(uri, what)
    _put(filesystem(), local_path, location, what)


def _put(fs, local_path: str, location: S3Location, what: str) -> None:
    with_retries(lambda: fs.put_file(local_path, location.path), location, what=what, action="uploading")


def upload_tree(local_dir: str, uri: str, *, what: str = "output", last: Iterable[str] = ()) -> list[str]:
    """Write every file under `local_dir` to `uri`/<its relative path>; return the keys written, in order.

    Never deletes: objects already in the store stay, those of the same key are replaced. Files whose
    relative path is in `last` (a COMPLETE marker) are written after all the others, in the order given."""
    location = S3Location.parse(uri, what)
    last = [path.strip("/") for path in last]
    files = sorted(
        os.path.relpath(os.path.join(folder, name), local_dir).replace(os.sep, "/")
        for folder, _dirs, names in os.walk(local_dir)
        for name in names
    )
    ordered = [f for f in files if f not in last] + [f for f in last if f in files]
    fs = filesystem()
    written = []
    started = time.monotonic()
    for relative in ordered:
        target = location.child(relative)
        _put(fs, os.path.join(local_dir, *relative.split("/")), target, what)
        written.append(target.key)
    logger.info("%s %s: uploaded %d file(s) in %.1f s", what, location, len(written), time.monotonic() - started)
    return written


def delete_tree(uri: str, *, what: str = "checkpoint") -> int:
    """Delete every object under the folder `uri` (pruning); return how many there were."""
    location = S3Location.parse(uri, what)
    fs = filesystem()
    keys = [o.key for o in _list(fs, location, location.folder_prefix, what=what)]
    for start in range(0, len(keys), DELETE_BATCH):
        batch = {"Objects": [{"Key": key} for key in keys[start : start + DELETE_BATCH]], "Quiet": True}
        answer = with_retries(
            lambda batch=batch: fs.call_s3("delete_objects", Bucket=location.bucket, Delete=batch),
            location,
            what=what,
            action="deleting",
        )
        # DeleteObjects answers 200 and lists the keys it could not delete: those are failures too.
        errors = answer.get("Errors") or []
        if errors:
            first = errors[0]
            failed = S3Location(location.bucket, first.get("Key", ""))
            raise failure_class(first.get("Code"), None)(
                f"{what} {failed}: the store refused to delete it ({first.get('Code')}: {first.get('Message', '')}) "
                f"and {len(errors) - 1} other object(s)",
                uri=str(failed),
                code=first.get("Code"),
            )
    return len(keys)
