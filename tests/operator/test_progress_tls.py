"""The progress endpoint's TLS: what the operator renews and when (pure plans over a clock that tests move), the
CA rotation through an overlap, replicas sharing one Secret, an externally managed Secret, the settings it refuses,
and the server picking up a renewed certificate without a restart."""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
import ssl
from datetime import datetime, timedelta, timezone

import pytest
from aiohttp import web
from cryptography import x509
from finetune_operator.builders import build_progress_secret
from finetune_operator.builders.env import progress_env
from finetune_operator.config import OperatorConfig
from finetune_operator.progress import tls
from finetune_operator.progress.tls import (
    Lifetimes,
    MemoryStore,
    ProgressTls,
    TlsMaterial,
    cert_hosts,
    issued_by,
    material_from_data,
    material_to_data,
    not_after,
    plan_renewal,
    publish_bundle,
    renew,
)
from finetune_operator.registry import JobRegistry

T0 = datetime(2026, 12, 1, tzinfo=timezone.utc)
DAY = timedelta(days=1)
LIFE = Lifetimes(cert=30 * DAY, ca=3650 * DAY, ca_overlap=7 * DAY)
HOSTS = ("finetune-operator.finetune-system.svc", "finetune-operator.finetune-system.svc.cluster.local", "10.0.0.7")


def fresh(now: datetime = T0, hosts: tuple[str, ...] = HOSTS, life: Lifetimes = LIFE) -> TlsMaterial:
    empty = TlsMaterial()
    return renew(empty, plan_renewal(empty, hosts, now, life), hosts, now, life)


def step(material: TlsMaterial, now: datetime, hosts: tuple[str, ...] = HOSTS, life: Lifetimes = LIFE):
    renewal = plan_renewal(material, hosts, now, life)
    return renewal, renew(material, renewal, hosts, now, life) if renewal.needed else material


# -- what a fresh Secret gets ------------------------------------------------------------------------------


def test_an_empty_secret_gets_a_ca_and_a_certificate_it_signed_for_every_host():
    material = fresh()

    assert len(material.bundle) == 1 and material.signer == material.bundle[0]
    assert issued_by(material.cert, material.signer)
    assert cert_hosts(material.cert) == set(HOSTS)
    san = material.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.0.0.7")]
    assert isinstance(material.key.curve, type(material.ca_key.curve)) and material.key.curve.name == "secp256r1"
    assert not_after(material.cert) - T0 <= LIFE.cert
    assert not_after(material.signer) - T0 <= LIFE.ca and not_after(material.signer) - T0 > LIFE.ca - DAY


def test_the_secret_round_trips_and_a_valid_one_needs_nothing():
    material = material_from_data(material_to_data(fresh()))

    assert not plan_renewal(material, HOSTS, T0 + DAY, LIFE).needed


def test_the_config_names_the_base_url_host_and_the_service():
    config = OperatorConfig(progress_base_url="https://127.0.0.1:8443")

    assert config.progress_tls_hosts == (
        "127.0.0.1",
        "finetune-operator.finetune-system.svc",
        "finetune-operator.finetune-system.svc.cluster.local",
    )


# -- the serving certificate ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "due"),
    [(DAY, False), (19 * DAY, False), (20 * DAY + timedelta(hours=1), True), (31 * DAY, True)],
)
def test_the_certificate_is_renewed_with_a_third_of_its_life_left(age, due):
    renewal = plan_renewal(fresh(), HOSTS, T0 + age, LIFE)

    assert renewal.cert is due
    assert not (renewal.new_ca or renewal.stage_ca or renewal.promote_ca)


def test_a_renewed_certificate_comes_from_the_same_ca_so_trainers_keep_trusting_it():
    material = fresh()

    renewal, renewed = step(material, T0 + 25 * DAY)

    assert renewal.cert and renewed.bundle == material.bundle
    assert renewed.cert.serial_number != material.cert.serial_number
    assert issued_by(renewed.cert, material.signer)
    assert not_after(renewed.cert) > T0 + 50 * DAY


def test_a_certificate_missing_a_host_is_replaced():
    renewal = plan_renewal(fresh(hosts=HOSTS[:2]), HOSTS, T0, LIFE)

    assert renewal.cert and "10.0.0.7" in " ".join(renewal.reasons)


def test_a_certificate_from_another_ca_or_with_another_key_is_replaced():
    material, stranger = fresh(), fresh()

    assert plan_renewal(
        TlsMaterial(stranger.cert, stranger.key, material.bundle, material.ca_key), HOSTS, T0, LIFE
    ).cert
    assert plan_renewal(
        TlsMaterial(material.cert, stranger.key, material.bundle, material.ca_key), HOSTS, T0, LIFE
    ).cert


def test_a_tiny_lifetime_is_not_spent_in_the_past():
    # Certificates start a little early for clock skew, but never so early that they are born due for renewal.
    short = Lifetimes(cert=timedelta(seconds=15), ca=3650 * DAY, ca_overlap=7 * DAY)
    material = fresh(life=short)

    assert not plan_renewal(material, HOSTS, T0 + timedelta(seconds=5), short).needed
    assert plan_renewal(material, HOSTS, T0 + timedelta(seconds=12), short).cert


# -- the CA's rotation ---------------------------------------------------------------------------------------


def test_the_ca_rotates_through_an_overlap_in_which_both_cas_are_trusted():
    material = fresh()
    old_ca = material.signer

    # With a third of its life left, a next CA joins the bundle; the old one still signs.
    staged_at = T0 + 2440 * DAY
    renewal, material = step(material, staged_at)
    assert renewal.stage_ca and not renewal.promote_ca
    assert material.signer == old_ca and material.next_signer is not None
    assert set(material.bundle) == {old_ca, material.next_signer}
    new_ca = material.next_signer

    # During the overlap: nothing changes but the serving certificate's own renewals, still by the old CA.
    renewal, material = step(material, staged_at + 6 * DAY)
    assert not (renewal.stage_ca or renewal.promote_ca)
    assert issued_by(material.cert, old_ca)

    # After it: the new CA signs; the old one stays trusted (certificates it issued may still be served elsewhere).
    renewal, material = step(material, staged_at + 8 * DAY)
    assert renewal.promote_ca and renewal.cert
    assert material.signer == new_ca and material.next_signer is None
    assert issued_by(material.cert, new_ca)
    assert set(material.bundle) == {old_ca, new_ca}

    # Once the old CA has expired, it leaves the bundle.
    renewal, material = step(material, not_after(old_ca) + DAY)
    assert renewal.drop == (old_ca,)
    assert material.bundle == (new_ca,)


def test_an_expired_signer_hands_over_to_a_trusted_next_ca_at_once():
    material = fresh()
    _, material = step(material, T0 + 2440 * DAY)
    new_ca = material.next_signer

    renewal, material = step(material, not_after(material.signer) + timedelta(seconds=1))

    assert renewal.promote_ca and not renewal.new_ca
    assert material.signer == new_ca and issued_by(material.cert, new_ca)


def test_a_secret_with_everything_expired_starts_over():
    renewal = plan_renewal(fresh(), HOSTS, T0 + 3700 * DAY, LIFE)

    assert renewal.new_ca and renewal.cert


# -- the running part: replicas, external Secrets, settings --------------------------------------------------


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def manager(store, *, mode="self-signed", clock: Clock | None = None, **settings) -> ProgressTls:
    config = OperatorConfig(progress_base_url="https://127.0.0.1:8443", progress_tls=mode, **settings)
    return ProgressTls(config, store, now=clock or Clock(T0))


def test_two_replicas_share_one_secret_and_serve_the_same_certificate():
    store = MemoryStore()
    first, second = manager(store), manager(store)

    first.refresh()
    written = store.version
    second.refresh()

    assert store.version == written  # the second replica found a valid Secret and wrote nothing
    assert first.loaded == second.loaded and first.bundle_pem == second.bundle_pem


class RacingStore(MemoryStore):
    """Another replica renews between this replica's read and its write (its write then fails)."""

    def __init__(self, rival: ProgressTls | None = None) -> None:
        super().__init__()
        self.rival = rival
        self.writes = 0

    def write(self, data, version):
        self.writes += 1
        if self.rival is not None:
            rival, self.rival = self.rival, None
            rival.refresh()  # wins: the version moves on
        return super().write(data, version)


def test_a_replica_that_loses_the_race_takes_the_winners_certificate():
    store = RacingStore()
    loser, winner = manager(store), manager(store)
    store.rival = winner

    loser.refresh()

    assert store.writes == 2  # the loser's one write, refused; the winner's
    assert loser.loaded == winner.loaded and loser.bundle_pem == winner.bundle_pem


def test_an_external_secret_is_read_and_never_written():
    store = MemoryStore()
    store.data = material_to_data(fresh(hosts=("127.0.0.1",)))
    store.data.pop("ca.key")
    external = manager(store, mode="external")

    assert external.refresh()  # the bundle (ca.crt) was taken
    assert store.version == 0 and external.loaded is not None

    # Whoever manages it renews it: the operator reloads it at its next check.
    store.data = material_to_data(fresh(hosts=("127.0.0.1",)))
    before = external.loaded
    external.refresh()
    assert external.loaded != before and store.version == 0


def test_an_external_rsa_certificate_is_served_as_given():
    # cert-manager's default key is RSA 2048: the operator serves any key type ssl can.
    from cryptography.hazmat.primitives.asymmetric import rsa

    ca_key, key = rsa.generate_private_key(65537, 2048), rsa.generate_private_key(65537, 2048)
    ca = tls.issue_ca(ca_key, T0, 365 * DAY)
    cert = tls.issue_cert(key, ca, ca_key, ("127.0.0.1",), T0, 30 * DAY)
    store = MemoryStore()
    store.data = material_to_data(TlsMaterial(cert=cert, key=key, bundle=(ca,)))

    external = manager(store, mode="external")

    assert external.refresh() and external.loaded is not None


def test_an_external_secret_without_its_ca_keeps_the_current_certificate(caplog):
    store = MemoryStore()
    store.data = material_to_data(fresh(hosts=("127.0.0.1",)))
    del store.data["ca.crt"]

    assert not manager(store, mode="external").refresh()
    assert "lacks ca.crt" in caplog.text


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"FINETUNE_PROGRESS_TLS": "disabled"}, "FINETUNE_PROGRESS_BASE_URL"),
        ({"FINETUNE_PROGRESS_BASE_URL": "http://op.sys.svc:8081"}, "FINETUNE_PROGRESS_TLS=disabled"),
        ({"FINETUNE_PROGRESS_TLS": "on"}, "self-signed"),
        ({"FINETUNE_PROGRESS_TLS_CA_SECONDS": "86400"}, "FINETUNE_PROGRESS_TLS_CA_SECONDS"),
    ],
)
def test_settings_that_would_leave_trainers_unable_to_report_are_refused(env, names):
    with pytest.raises(ValueError, match=names):
        OperatorConfig.from_env(env).check_progress_tls()


def test_plain_http_is_an_explicit_opt_out_with_a_warning(caplog):
    config = OperatorConfig.from_env(
        {"FINETUNE_PROGRESS_TLS": "disabled", "FINETUNE_PROGRESS_BASE_URL": "http://op.sys.svc:8081"}
    )

    assert asyncio.run(ProgressTls.start(config, kube=None)) is None
    assert "clear text" in caplog.text
    assert "FINETUNE_PROGRESS_CA_FILE" not in {e["name"] for e in progress_env("job", "ns", config)}


# -- the bundle's way to trainers ----------------------------------------------------------------------------


def test_jobs_get_the_ca_bundle_beside_their_token_and_its_path_in_their_env():
    config = OperatorConfig(progress_ca_bundle="-----BEGIN CERTIFICATE-----\n...")

    secret = build_progress_secret("sentiment", "team-a", "t0ken", config.progress_ca_bundle)
    env = {e["name"]: e["value"] for e in progress_env("sentiment", "team-a", config)}

    assert base64.b64decode(secret["data"]["ca.crt"]).decode() == config.progress_ca_bundle
    assert env["FINETUNE_PROGRESS_CA_FILE"] == "/var/run/secrets/finetune/progress/ca.crt"
    assert env["FINETUNE_PROGRESS_URL"].startswith("https://")


class FakeKube:
    def __init__(self, existing: set[tuple[str, str]]) -> None:
        self.existing = existing
        self.patched: list[tuple[str, str, dict]] = []

    def patch_secret_data(self, namespace, name, data):
        if (namespace, name) not in self.existing:
            return False
        self.patched.append((namespace, name, data))
        return True


def test_a_new_bundle_reaches_live_jobs_secrets():
    registry = JobRegistry()
    registry.track("team-a", "sentiment", uid="u1", created=T0, gpus=0, gpu_seconds=0)
    registry.track("team-b", "fresh", uid="u2", created=T0, gpus=0, gpu_seconds=0)  # its Secret is not made yet
    kube = FakeKube({("team-a", "sentiment-progress")})

    class State:
        pass

    state = State()
    state.registry, state.kube = registry, kube

    publish_bundle(state, "BUNDLE")

    assert kube.patched == [("team-a", "sentiment-progress", {"ca.crt": base64.b64encode(b"BUNDLE").decode()})]


# -- the server: a renewed certificate without a restart -------------------------------------------------------


def served_serial(port: int, bundle: str) -> int:
    context = ssl.create_default_context(cadata=bundle)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as conn:
            return x509.load_der_x509_certificate(conn.getpeercert(binary_form=True)).serial_number


async def test_the_running_server_hands_new_handshakes_the_renewed_certificate():
    # Issued 25 days ago (a third of its life left now), so that real handshakes verify both certificates.
    now = datetime.now(timezone.utc)
    clock = Clock(now - 25 * DAY)
    progress = manager(MemoryStore(), clock=clock)
    progress.refresh()
    runner = web.AppRunner(web.Application())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=progress.ssl_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        first = await asyncio.to_thread(served_serial, port, progress.bundle_pem)
        clock.now = now
        progress.refresh()
        second = await asyncio.to_thread(served_serial, port, progress.bundle_pem)
    finally:
        await runner.cleanup()

    assert first != second
    assert second == material_from_data(progress.store.data).cert.serial_number


def test_the_module_documents_its_modes():
    assert all(mode in (tls.__doc__ or "") for mode in ("self-signed", "external", "disabled"))


def test_outside_a_cluster_without_a_namespace_the_ca_lives_in_memory_with_a_warning(caplog):
    config = OperatorConfig(progress_base_url="https://127.0.0.1:8443", progress_tls_namespace="")

    started = asyncio.run(ProgressTls.start(config, kube=None))

    assert isinstance(started.store, MemoryStore) and started.loaded is not None
    assert "in memory" in caplog.text
    assert started.configured(config).progress_ca_bundle == started.bundle_pem != ""
