"""TLS for the progress endpoint: its serving certificate and CA, kept in a Secret, renewed before they expire.

Modes (FINETUNE_PROGRESS_TLS, docs/progress.md "Security"):
- `self-signed` (default): the operator makes an ECDSA P-256 CA and a serving certificate it signs, stores both
  in the Secret `finetune-operator-progress-tls` of its namespace, and renews them: the serving certificate with
  a third of its life left, the CA through an overlap (below).
- `external`: another tool (cert-manager) keeps that Secret (tls.crt, tls.key, ca.crt); the operator only reads
  it, and serves whatever it holds now.
- `disabled`: plain HTTP, with a warning.

CA rotation, self-signed. The Secret holds the trust bundle `ca.crt` (what trainers verify with: every CA still
trusted), `ca.key` (the signing CA's key; its certificate is the bundle's one with that public key) and, during a
rotation, `ca-next.key`. With a third of the signing CA's life left, a next CA is made and joins the bundle
(`stage`); live jobs' progress Secrets get the new bundle. Once it has been in the bundle for the overlap
(FINETUNE_PROGRESS_TLS_CA_OVERLAP_SECONDS), it signs the serving certificate from then on (`promote`); the old CA
stays in the bundle until it expires (`drop`). A trainer whose bundle lacks the new CA re-reads its CA file when
verification fails (kubelets refresh mounted Secrets within a minute or two).

Replicas (Kopf peering) share the Secret: it is created only if absent and replaced only at the resourceVersion
it was read at; a replica that loses either race reads the winner's Secret and plans again (nothing to do).

The decision (`plan_renewal`) is pure: what the Secret holds and the time in, what to renew (and why) out.
`renew` does the cryptography, `ProgressTls` the I/O: the Secret, the SSLContext the server uses (its chain is
reloaded in place: new handshakes get the new certificate, no restart) and the bundle's way to the trainers.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import logging
import os
import ssl
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .. import clock
from ..builders.secret import PROGRESS_CA_KEY, progress_ca_patch
from ..config import OperatorConfig
from ..names import progress_secret_name

if TYPE_CHECKING:
    from ..kube import KubeApi
    from ..reconcile.state import OperatorState

log = logging.getLogger(__name__)

TLS_CERT_KEY, TLS_KEY_KEY, CA_BUNDLE_KEY = "tls.crt", "tls.key", "ca.crt"
CA_KEY_KEY, CA_NEXT_KEY_KEY = "ca.key", "ca-next.key"
# New certificates start a little in the past: a peer whose clock is behind ours still accepts them.
MAX_BACKDATE = timedelta(minutes=5)
RENEW_FRACTION = 1 / 3

Key = ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class Lifetimes:
    cert: timedelta
    ca: timedelta
    ca_overlap: timedelta

    @classmethod
    def of(cls, config: OperatorConfig) -> Lifetimes:
        return cls(
            cert=timedelta(seconds=config.progress_tls_cert_seconds),
            ca=timedelta(seconds=config.progress_tls_ca_seconds),
            ca_overlap=timedelta(seconds=config.progress_tls_ca_overlap_seconds),
        )


@dataclass(frozen=True)
class TlsMaterial:
    """What the Secret holds, parsed; a field is None (or empty) when absent or unreadable."""

    cert: x509.Certificate | None = None
    key: Key | None = None
    bundle: tuple[x509.Certificate, ...] = ()
    ca_key: Key | None = None
    ca_next_key: Key | None = None

    def ca_of(self, key: Key | None) -> x509.Certificate | None:
        """The bundle's certificate for a CA key (the signing CA for ca_key, the next one for ca_next_key)."""
        if key is None:
            return None
        wanted = _public_bytes(key.public_key())
        return next((c for c in self.bundle if _public_bytes(c.public_key()) == wanted), None)

    @property
    def signer(self) -> x509.Certificate | None:
        return self.ca_of(self.ca_key)

    @property
    def next_signer(self) -> x509.Certificate | None:
        return self.ca_of(self.ca_next_key)

    @property
    def bundle_pem(self) -> str:
        return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in self.bundle)


@dataclass(frozen=True)
class Renewal:
    """What to change, with a sentence per change for the log; nothing to do when `needed` is False."""

    new_ca: bool = False
    stage_ca: bool = False
    promote_ca: bool = False
    drop: tuple[x509.Certificate, ...] = ()
    cert: bool = False
    reasons: tuple[str, ...] = field(default=())

    @property
    def needed(self) -> bool:
        return self.new_ca or self.stage_ca or self.promote_ca or bool(self.drop) or self.cert


# -- the decision (pure) -----------------------------------------------------------------------------------


def not_before(cert: x509.Certificate) -> datetime:
    return cert.not_valid_before_utc


def not_after(cert: x509.Certificate) -> datetime:
    return cert.not_valid_after_utc


def renewal_due(cert: x509.Certificate, now: datetime) -> bool:
    """True once a third of the certificate's life (or less) is left, or it has expired or not begun."""
    life = not_after(cert) - not_before(cert)
    return now < not_before(cert) or not_after(cert) - now <= life * RENEW_FRACTION


def subject_alt_names(hosts: tuple[str, ...]) -> list[x509.GeneralName]:
    """DNS names as DNSName, IP addresses (the loopback of a sandbox, a node IP) as IPAddress."""
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def cert_hosts(cert: x509.Certificate) -> set[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return set(san.get_values_for_type(x509.DNSName)) | {str(a) for a in san.get_values_for_type(x509.IPAddress)}


def issued_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False


def plan_renewal(material: TlsMaterial, hosts: tuple[str, ...], now: datetime, lifetimes: Lifetimes) -> Renewal:
    """What a self-signed Secret needs at `now` so the endpoint stays trusted and valid for `hosts`."""
    reasons: list[str] = []
    signer, next_signer = material.signer, material.next_signer
    if signer is None or now >= not_after(signer):
        if next_signer is not None and now < not_after(next_signer):
            # The signing CA is gone (expired or its key lost) but the next one is trusted already: use it now.
            reasons.append("the signing CA is missing or expired: the next CA signs from now on")
            signer, promote = next_signer, True
        else:
            reasons.append("no usable CA in the Secret: a new CA and certificate")
            return Renewal(new_ca=True, cert=True, reasons=tuple(reasons))
    else:
        promote = (
            next_signer is not None and now >= not_before(next_signer) + _backdate(lifetimes.ca) + lifetimes.ca_overlap
        )
        if promote:
            reasons.append(
                f"the next CA has been trusted for the overlap ({lifetimes.ca_overlap}): it signs from now on"
            )
            signer = next_signer
    stage = not promote and next_signer is None and renewal_due(signer, now)
    if stage:
        reasons.append(f"the CA expires at {not_after(signer):%Y-%m-%d %H:%M} UTC: a next CA joins the trust bundle")
    keep = {_fingerprint(signer)} | ({_fingerprint(next_signer)} if next_signer is not None and not promote else set())
    drop = tuple(c for c in material.bundle if _fingerprint(c) not in keep and now >= not_after(c))
    if drop:
        reasons.append(f"{len(drop)} expired CA(s) leave the trust bundle")
    cert_reason = _cert_problem(material, signer, hosts, now)
    if promote and cert_reason is None:
        cert_reason = "the certificate is re-issued by the new CA"
    if cert_reason:
        reasons.append(cert_reason)
    return Renewal(stage_ca=stage, promote_ca=promote, drop=drop, cert=cert_reason is not None, reasons=tuple(reasons))


def _cert_problem(material: TlsMaterial, signer: x509.Certificate, hosts: tuple[str, ...], now: datetime) -> str | None:
    cert = material.cert
    if cert is None or material.key is None:
        return "no serving certificate or key in the Secret: a new one"
    if _public_bytes(cert.public_key()) != _public_bytes(material.key.public_key()):
        return "the serving certificate does not match its key: a new one"
    if not issued_by(cert, signer):
        return "the serving certificate was not issued by the signing CA: a new one"
    missing = set(hosts) - cert_hosts(cert)
    if missing:
        return f"the serving certificate does not name {', '.join(sorted(missing))}: a new one"
    if renewal_due(cert, now):
        return f"the serving certificate expires at {not_after(cert):%Y-%m-%d %H:%M:%S} UTC: renewed"
    return None


def _backdate(lifetime: timedelta) -> timedelta:
    # At most a tenth of the lifetime: a short-lived certificate must not spend its renewal window in the past.
    return min(MAX_BACKDATE, lifetime / 10)


def _public_bytes(public_key: Any) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _fingerprint(cert: x509.Certificate) -> bytes:
    return cert.fingerprint(hashes.SHA256())


# -- the cryptography -------------------------------------------------------------------------------------------


def new_key() -> Key:
    return ec.generate_private_key(ec.SECP256R1())


def issue_ca(key: Key, now: datetime, lifetime: timedelta) -> x509.Certificate:
    start = now - _backdate(lifetime)
    # A name of its own per CA (its start time): old and new CA must differ for verifiers to tell them apart.
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "finetune-operator"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"finetune-operator progress CA {start:%Y%m%dT%H%M%S.%fZ}"),
        ]
    )
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + lifetime)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def issue_cert(
    key: Key, ca: x509.Certificate, ca_key: Key, hosts: tuple[str, ...], now: datetime, lifetime: timedelta
) -> x509.Certificate:
    start = now - _backdate(lifetime)
    # Never past the CA's own end (a verifier would refuse the chain then anyway).
    end = min(start + lifetime, not_after(ca))
    public = key.public_key()
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, (hosts or ("finetune-operator",))[0][:64])]))
        .issuer_name(ca.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(subject_alt_names(hosts)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def renew(
    material: TlsMaterial, renewal: Renewal, hosts: tuple[str, ...], now: datetime, lifetimes: Lifetimes
) -> TlsMaterial:
    """`material` with `renewal` carried out (new keys and certificates)."""
    bundle, ca_key, ca_next_key = list(material.bundle), material.ca_key, material.ca_next_key
    if renewal.new_ca:
        ca_key, ca_next_key = new_key(), None
        bundle = [c for c in bundle if now < not_after(c)] + [issue_ca(ca_key, now, lifetimes.ca)]
    if renewal.promote_ca:
        ca_key, ca_next_key = ca_next_key, None
    if renewal.stage_ca:
        ca_next_key = new_key()
        bundle.append(issue_ca(ca_next_key, now, lifetimes.ca))
    dropped = {_fingerprint(c) for c in renewal.drop}
    material = replace(
        material,
        bundle=tuple(c for c in bundle if _fingerprint(c) not in dropped),
        ca_key=ca_key,
        ca_next_key=ca_next_key,
    )
    if renewal.cert:
        signer = material.signer
        assert signer is not None and ca_key is not None
        key = new_key()
        material = replace(material, key=key, cert=issue_cert(key, signer, ca_key, hosts, now, lifetimes.cert))
    return material


# -- the Secret's data -------------------------------------------------------------------------------------


def material_from_data(data: dict[str, str]) -> TlsMaterial:
    """Parse a Secret's base64 data; what is missing or unreadable is left None (and renewed, if self-signed)."""

    def raw(key: str) -> bytes | None:
        try:
            return base64.b64decode(data[key], validate=True) if data.get(key) else None
        except (binascii.Error, ValueError):
            log.warning("key %s of the progress TLS Secret is not base64; ignored", key)
            return None

    def private_key(key: str) -> Key | None:
        pem = raw(key)
        if pem is None:
            return None
        try:
            loaded = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError):
            log.warning("key %s of the progress TLS Secret holds no readable private key; ignored", key)
            return None
        # Any key type ssl serves (cert-manager's default is RSA); the operator's own keys are ECDSA P-256.
        return loaded  # type: ignore[return-value]

    def certificates(key: str) -> tuple[x509.Certificate, ...]:
        pem = raw(key)
        if pem is None:
            return ()
        try:
            return tuple(x509.load_pem_x509_certificates(pem))
        except ValueError:
            log.warning("key %s of the progress TLS Secret holds no readable certificate; ignored", key)
            return ()

    chain = certificates(TLS_CERT_KEY)
    return TlsMaterial(
        cert=chain[0] if chain else None,
        key=private_key(TLS_KEY_KEY),
        bundle=certificates(CA_BUNDLE_KEY),
        ca_key=private_key(CA_KEY_KEY),
        ca_next_key=private_key(CA_NEXT_KEY_KEY),
    )


def material_to_data(material: TlsMaterial) -> dict[str, str]:
    pem: dict[str, bytes] = {CA_BUNDLE_KEY: material.bundle_pem.encode()}
    if material.cert is not None:
        pem[TLS_CERT_KEY] = material.cert.public_bytes(serialization.Encoding.PEM)
    for name, key in (
        (TLS_KEY_KEY, material.key),
        (CA_KEY_KEY, material.ca_key),
        (CA_NEXT_KEY_KEY, material.ca_next_key),
    ):
        if key is not None:
            pem[name] = _key_pem(key)
    return {name: base64.b64encode(value).decode() for name, value in pem.items()}


def _key_pem(key: Key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


# -- where the Secret lives ------------------------------------------------------------------------------------


class SecretStore:
    """The TLS Secret through the API: (data, resourceVersion) out; create-if-absent and guarded replace in."""

    def __init__(self, kube: KubeApi, namespace: str, name: str) -> None:
        self.kube, self.namespace, self.name = kube, namespace, name

    def __str__(self) -> str:
        return f"Secret {self.namespace}/{self.name}"

    def read(self) -> tuple[dict[str, str], str | None] | None:
        secret = self.kube.get_secret(self.namespace, self.name)
        if secret is None:
            return None
        return dict(secret.get("data") or {}), (secret.get("metadata") or {}).get("resourceVersion")

    def write(self, data: dict[str, str], version: str | None) -> bool:
        """False when another writer got there first (read again)."""
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {
                    "app.kubernetes.io/name": "finetune-operator",
                    "app.kubernetes.io/component": "progress-tls",
                },
            },
            "data": data,
        }
        if version is None:
            return self.kube.create_secret(body)
        body["metadata"]["resourceVersion"] = version
        return self.kube.replace_secret(body)


class MemoryStore:
    """Outside a cluster with no namespace for the Secret: the material lives and dies with this process."""

    def __init__(self) -> None:
        self.data: dict[str, str] | None = None
        self.version = 0

    def __str__(self) -> str:
        return "memory (no FINETUNE_PROGRESS_TLS_NAMESPACE or POD_NAMESPACE)"

    def read(self) -> tuple[dict[str, str], str | None] | None:
        return None if self.data is None else (dict(self.data), str(self.version))

    def write(self, data: dict[str, str], version: str | None) -> bool:
        if (None if self.data is None else str(self.version)) != version:
            return False
        self.data, self.version = dict(data), self.version + 1
        return True


# -- the running part -----------------------------------------------------------------------------------------


class ProgressTls:
    """The endpoint's certificate while the operator runs: loaded at start, checked every interval, renewed
    (self-signed) or re-read (external), reloaded into the server's SSLContext, the bundle passed on."""

    def __init__(
        self, config: OperatorConfig, store: SecretStore | MemoryStore, *, now: Callable[[], datetime] = clock.now
    ) -> None:
        self.config = config
        self.store = store
        self.now = now
        self.external = config.progress_tls == "external"
        self.hosts = config.progress_tls_hosts
        self.lifetimes = Lifetimes.of(config)
        self.ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ssl_context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.loaded: tuple[str, str] | None = None  # (tls.crt, tls.key) in the SSLContext now
        self.bundle_pem = ""
        self.on_bundle: Callable[[str], Awaitable[None]] | None = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, config: OperatorConfig, kube: KubeApi) -> ProgressTls | None:
        """The endpoint's TLS at start-up (None: disabled, plain HTTP); raises when no usable material exists."""
        config.check_progress_tls()
        if config.progress_tls == "disabled":
            log.warning(
                "FINETUNE_PROGRESS_TLS=disabled: progress reports and their bearer tokens travel in clear text; "
                "anyone on the pod network can read a token and forge that job's progress"
            )
            return None
        namespace = config.progress_tls_namespace
        if namespace:
            store: SecretStore | MemoryStore = SecretStore(kube, namespace, config.progress_tls_secret)
        elif config.progress_tls == "external":
            raise ValueError(
                "FINETUNE_PROGRESS_TLS=external reads the Secret FINETUNE_PROGRESS_TLS_SECRET of the operator's "
                "namespace, but neither FINETUNE_PROGRESS_TLS_NAMESPACE nor POD_NAMESPACE is set"
            )
        else:
            log.warning(
                "no FINETUNE_PROGRESS_TLS_NAMESPACE and no POD_NAMESPACE: the progress CA lives in memory, and "
                "running trainers stop trusting the endpoint when the operator restarts"
            )
            store = MemoryStore()
        tls = cls(config, store)
        await tls.check()
        if tls.loaded is None:
            raise RuntimeError(f"no usable TLS certificate for the progress endpoint in {store}")
        return tls

    def configured(self, config: OperatorConfig) -> OperatorConfig:
        """`config` with the trust bundle trainers get (each job's progress Secret, key ca.crt)."""
        return replace(config, progress_ca_bundle=self.bundle_pem)

    def follow(self, state: OperatorState) -> None:
        """From now on, a new bundle reaches new jobs (state.config) and live ones (their progress Secrets)."""

        async def publish(bundle: str) -> None:
            state.config = replace(state.config, progress_ca_bundle=bundle)
            await asyncio.to_thread(publish_bundle, state, bundle)

        self.on_bundle = publish

    # -- one check ---------------------------------------------------------------------------------------

    def refresh(self) -> bool:
        """Read the Secret, renew what is due (self-signed), load what changed. True when the bundle changed."""
        material = self.read_and_renew()
        return material is not None and self.load(material)

    async def check(self) -> bool:
        """`refresh` on the operator's loop: the API calls and key generation in a thread, the SSLContext's reload
        on the loop itself (the thread that makes new connections from it), so no handshake meets a half-loaded
        context. OpenSSL copies the chain into each new connection: handshakes in flight keep the old one."""
        material = await asyncio.to_thread(self.read_and_renew)
        return material is not None and self.load(material)

    def read_and_renew(self) -> TlsMaterial | None:
        """What the Secret holds, renewed first where due (self-signed: written back, guarded); None when the
        Secret kept changing under this replica."""
        for _ in range(5):
            found = self.store.read()
            data, version = found if found is not None else ({}, None)
            material = material_from_data(data)
            if not self.external:
                renewal = plan_renewal(material, self.hosts, self.now(), self.lifetimes)
                if renewal.needed:
                    material = renew(material, renewal, self.hosts, self.now(), self.lifetimes)
                    if not self.store.write(material_to_data(material), version):
                        log.info(
                            "the progress TLS Secret changed while renewing it (another replica?): reading it again"
                        )
                        continue
                    log.info("progress TLS renewed in %s: %s", self.store, "; ".join(renewal.reasons))
            return material
        log.warning("the progress TLS Secret kept changing under this replica; trying again at the next check")
        return None

    def load(self, material: TlsMaterial) -> bool:
        """Serve `material`'s certificate from now on (if it changed); True when its trust bundle changed."""
        if material.cert is None or material.key is None or not material.bundle:
            log.error(
                "%s lacks %s: the progress endpoint keeps its current certificate%s",
                self.store,
                ", ".join(
                    k
                    for k, v in (
                        (TLS_CERT_KEY, material.cert),
                        (TLS_KEY_KEY, material.key),
                        (CA_BUNDLE_KEY, material.bundle),
                    )
                    if not v
                ),
                " (whoever manages it must fill it)" if self.external else "",
            )
            return False
        chain = (material.cert.public_bytes(serialization.Encoding.PEM).decode(), _key_pem(material.key).decode())
        if chain != self.loaded:
            _load_chain(self.ssl_context, *chain)
            self.loaded = chain
            log.info(
                "progress endpoint serves the certificate for %s valid until %s UTC",
                ", ".join(sorted(cert_hosts(material.cert))),
                f"{not_after(material.cert):%Y-%m-%d %H:%M:%S}",
            )
            self._warn_external(material)
        changed = material.bundle_pem != self.bundle_pem
        self.bundle_pem = material.bundle_pem
        return changed

    def _warn_external(self, material: TlsMaterial) -> None:
        if not self.external or material.cert is None:
            return
        missing = set(self.hosts) - cert_hosts(material.cert)
        if missing:
            log.warning(
                "the progress certificate in %s does not name %s: trainers will refuse it (add them to its SANs)",
                self.store,
                ", ".join(sorted(missing)),
            )

    # -- the background check ---------------------------------------------------------------------------

    def run_in_background(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch(), name="progress-tls")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.config.progress_tls_check_interval)
            try:
                changed = await self.check()
                if changed and self.on_bundle is not None:
                    await self.on_bundle(self.bundle_pem)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 (an API hiccup: the certificate in use stays valid for a while yet)
                log.warning(
                    "checking the progress TLS Secret failed; trying again in %gs",
                    self.config.progress_tls_check_interval,
                    exc_info=True,
                )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


def _load_chain(context: ssl.SSLContext, cert_pem: str, key_pem: str) -> None:
    # ssl loads certificates from files only: a private directory (0700, files 0600), gone once loaded.
    with tempfile.TemporaryDirectory(prefix="finetune-progress-tls-") as tmp:
        paths = []
        for name, text in (("tls.crt", cert_pem), ("tls.key", key_pem)):
            path = os.path.join(tmp, name)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(text)
            paths.append(path)
        context.load_cert_chain(certfile=paths[0], keyfile=paths[1])


def publish_bundle(state: OperatorState, bundle: str) -> None:
    """Give live jobs (every record this replica tracks) the new bundle in their progress Secrets."""
    patch = progress_ca_patch(bundle)
    updated = 0
    for record in list(state.registry.records.values()):
        try:
            updated += state.kube.patch_secret_data(record.namespace, progress_secret_name(record.name), patch)
        except Exception:  # noqa: BLE001 (the trainer keeps its old bundle, valid through the overlap)
            log.warning("giving %s/%s the new progress CA bundle failed", record.namespace, record.name, exc_info=True)
    log.info("the new progress CA bundle (%s) went to %d live jobs' Secrets", PROGRESS_CA_KEY, updated)
