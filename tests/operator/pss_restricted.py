"""The Pod Security Standard "restricted" profile (Kubernetes 1.31), as a pure check of a pod spec.

Each rule is the profile's, in its words (https://kubernetes.io/docs/concepts/security/pod-security-standards/):
the baseline rules first, then the restricted ones. `violations(pod_spec)` lists every broken rule,
naming the field, so a test failure says what to fix.
"""

from __future__ import annotations

from typing import Any

RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
ALLOWED_ADDED_CAPABILITIES = {"NET_BIND_SERVICE"}
ALLOWED_SECCOMP = {"RuntimeDefault", "Localhost"}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
ALLOWED_SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def _containers(pod: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{kind}[{c.get('name')}]", c)
        for kind in ("initContainers", "containers", "ephemeralContainers")
        for c in pod.get(kind) or []
    ]


def violations(pod: dict[str, Any]) -> list[str]:
    """Every "restricted" rule `pod` (a PodSpec dict) breaks; empty when it complies."""
    out: list[str] = []
    pod_security = pod.get("securityContext") or {}
    # Baseline: host namespaces, host paths and ports, privileged, capabilities, sysctls, /proc, SELinux, AppArmor.
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            out.append(f"spec.{field} must be unset or false")
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if "hostPath" in kinds:
            out.append(f"volume {volume['name']}: hostPath volumes are forbidden")
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            out.append(f"volume {volume['name']}: type {sorted(kinds - RESTRICTED_VOLUME_TYPES)} is not allowed")
    for sysctl in pod_security.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            out.append(f"spec.securityContext.sysctls: {sysctl.get('name')} is not a safe sysctl")
    if (pod_security.get("seLinuxOptions") or {}).get("type", "") not in ALLOWED_SELINUX_TYPES:
        out.append("spec.securityContext.seLinuxOptions.type is not allowed")
    if (pod_security.get("appArmorProfile") or {}).get("type") == "Unconfined":
        out.append("spec.securityContext.appArmorProfile must not be Unconfined")
    pod_non_root = pod_security.get("runAsNonRoot")
    pod_seccomp = (pod_security.get("seccompProfile") or {}).get("type")
    if pod_security.get("runAsUser") == 0:
        out.append("spec.securityContext.runAsUser must not be 0")
    if pod_seccomp is not None and pod_seccomp not in ALLOWED_SECCOMP:
        out.append(f"spec.securityContext.seccompProfile.type {pod_seccomp} is not RuntimeDefault or Localhost")
    for where, container in _containers(pod):
        security = container.get("securityContext") or {}
        capabilities = security.get("capabilities") or {}
        if security.get("privileged"):
            out.append(f"{where}: privileged must be unset or false")
        if any(port.get("hostPort") for port in container.get("ports") or []):
            out.append(f"{where}: hostPort must be unset or 0")
        if security.get("procMount", "Default") != "Default":
            out.append(f"{where}: procMount must be Default")
        if (security.get("seLinuxOptions") or {}).get("type", "") not in ALLOWED_SELINUX_TYPES:
            out.append(f"{where}: seLinuxOptions.type is not allowed")
        if (security.get("appArmorProfile") or {}).get("type") == "Unconfined":
            out.append(f"{where}: appArmorProfile must not be Unconfined")
        # Restricted: no privilege escalation, non-root, seccomp, capabilities dropped.
        if security.get("allowPrivilegeEscalation") is not False:
            out.append(f"{where}: securityContext.allowPrivilegeEscalation must be false")
        non_root = security.get("runAsNonRoot", pod_non_root)
        if non_root is not True:
            out.append(f"{where}: runAsNonRoot must be true (on the container or the pod)")
        if security.get("runAsUser") == 0:
            out.append(f"{where}: runAsUser must not be 0")
        seccomp = (security.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ALLOWED_SECCOMP:
            out.append(
                f"{where}: seccompProfile.type must be RuntimeDefault or Localhost (on the container or the pod)"
            )
        if "ALL" not in (capabilities.get("drop") or []):
            out.append(f"{where}: capabilities.drop must include ALL")
        added = set(capabilities.get("add") or []) - ALLOWED_ADDED_CAPABILITIES
        if added:
            out.append(f"{where}: capabilities.add may only hold NET_BIND_SERVICE, not {sorted(added)}")
    return out
