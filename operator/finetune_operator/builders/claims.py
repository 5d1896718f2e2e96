"""Which PersistentVolumeClaims a spec reads or writes, found in its pvc:// URIs."""

from __future__ import annotations

from ..spec import FineTuneJobSpec

PVC_SCHEME = "pvc://"


def claim_of(uri: str | None) -> str | None:
    """The claim name of a pvc://CLAIM/path URI; None for other schemes."""
    if not uri or not uri.startswith(PVC_SCHEME):
        return None
    return uri[len(PVC_SCHEME) :].split("/", 1)[0]


def pvc_claims(spec: FineTuneJobSpec) -> dict[str, bool]:
    """Claim name -> writable, in first-mention order; only the output's claim is writable."""
    read_uris = (
        spec.model.source,
        spec.dataset.train,
        spec.dataset.validation,
        spec.dataset.retention,
        *spec.dataset.test.values(),
    )
    claims: dict[str, bool] = {}
    for uri in read_uris:
        claim = claim_of(uri)
        if claim is not None:
            claims.setdefault(claim, False)
    output_claim = claim_of(spec.output.uri)
    if output_claim is not None:
        claims[output_claim] = True
    return claims
