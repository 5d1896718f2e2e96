"""Sends progress reports to the operator over HTTPS from a background thread; training never waits for it.

One POST per report, JSON, with the job's bearer token read from a mounted file (docs/progress.md). An https://
URL is verified (certificate chain and host name) against the CA bundle in FINETUNE_PROGRESS_CA_FILE, read again
whenever verification fails (the operator rotates its CA by updating that mounted file); a server that does not
verify gets no report and no token. Only the newest report matters: one submitted while another waits replaces it.
"""

from __future__ import annotations

import http.client
import json
import logging
import ssl
import threading
import urllib.error
import urllib.request

from finetune_trainer.reporting.prometheus import TrainerMetrics

logger = logging.getLogger("finetune_trainer")

REQUEST_TIMEOUT_SECONDS = 5.0
MIN_BACKOFF_SECONDS, MAX_BACKOFF_SECONDS = 0.5, 30.0


class ReportSender:
    """POSTs the newest submitted report; retries with backoff; a newer report replaces a waiting one.

    Outcomes per answer: 2xx sent; connection errors, timeouts, 429 and 5xx retried with exponential
    backoff (Retry-After honoured up to the cap); 401/403 re-read the token file (it may have been
    rotated) and retry; any other 4xx drops the report, logged once per status. A server certificate that
    does not verify against `ca_file` (https only; without one, the system's CAs) is retried with backoff and the
    CA file read again: nothing is sent to an unverified server.
    """

    def __init__(
        self,
        url: str,
        token_file: str | None = None,
        *,
        ca_file: str | None = None,
        metrics: TrainerMetrics | None = None,
        timeout: float = REQUEST_TIMEOUT_SECONDS,
        min_backoff: float = MIN_BACKOFF_SECONDS,
        max_backoff: float = MAX_BACKOFF_SECONDS,
    ):
        self.url = url
        self.token_file = token_file
        self.metrics = metrics
        self.timeout = timeout
        self.min_backoff, self.max_backoff = min_backoff, max_backoff
        self._cond = threading.Condition()
        self._pending: dict | None = None
        self._in_flight = False
        self._wake = False
        self._thread: threading.Thread | None = None
        self._token: str | None = None
        self._token_read = False
        self.ca_file = ca_file
        self._tls: ssl.SSLContext | None = None
        self._logged: set[str] = set()
        self.superseded = 0  # reports replaced before they were sent

    def submit(self, report: dict) -> None:
        with self._cond:
            if self._pending is not None:
                self.superseded += 1
            self._pending = report
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="finetune-progress", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def flush(self, timeout: float) -> bool:
        """Wait up to `timeout` s until nothing is left to send; a backoff in progress is cut short once."""
        with self._cond:
            self._wake = True
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._pending is None and not self._in_flight, timeout)

    def _run(self) -> None:
        delay = self.min_backoff
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending is not None)
                report, self._pending, self._in_flight = self._pending, None, True
            try:
                outcome, retry_after = self._deliver(report)
            except Exception:  # noqa: BLE001 - a bug here must not end the thread: later reports still matter
                self._log_once("crash", logging.ERROR, "progress sender failed unexpectedly", exc_info=True)
                outcome, retry_after = "retry", None
            with self._cond:
                self._in_flight = False
                if outcome == "retry" and self._pending is None:
                    self._pending = report  # retried unless a newer report superseded it
                self._cond.notify_all()
                if outcome != "retry":
                    delay = self.min_backoff
                    continue
                wait = min(self.max_backoff, max(delay, retry_after or 0.0))
                self._cond.wait_for(lambda: self._wake, wait)
                self._wake = False
                delay = min(self.max_backoff, delay * 2)

    def _deliver(self, report: dict) -> tuple[str, float | None]:
        """One POST: ("sent" | "retry" | "drop", Retry-After seconds or None)."""
        body = json.dumps(report, allow_nan=False, separators=(",", ":")).encode()
        headers = {"Content-Type": "application/json"}
        token = self._read_token()
        if token:
            headers["Authorization"] = f"Bearer {token}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            context = self._tls_context()
        except (OSError, ssl.SSLError) as error:
            self._failed()
            self._log_once(
                "ca-file",
                logging.ERROR,
                "progress reports to %s not sent: cannot load the CA file %s (%s); reading it again at each retry",
                self.url,
                self.ca_file,
                error,
            )
            return "retry", None
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=context) as response:
                status = response.status
        except urllib.error.HTTPError as error:
            status, detail, retry_after = error.code, _error_text(error), _retry_after(error.headers)
        except (OSError, http.client.HTTPException) as error:  # refused, reset, DNS, timeout
            if _verification_failed(error):
                self._tls = None  # the mounted CA bundle may have been rotated: read it again
                self._failed()
                self._log_once(
                    "verify",
                    logging.ERROR,
                    "progress reports to %s not sent: the server's certificate does not verify against the CA file "
                    "%s (%s); nothing is sent to it, the CA file is read again at each retry",
                    self.url,
                    self.ca_file or "(the system's CAs)",
                    _verification_reason(error),
                )
                return "retry", None
            self._failed()
            self._log_once(
                "connection",
                logging.WARNING,
                "progress report not delivered to %s: %s (retrying with backoff)",
                self.url,
                error,
            )
            return "retry", None
        else:
            if 200 <= status < 300:
                if self.metrics is not None:
                    self.metrics.reports_sent.inc()
                # Once per process: the log shows that progress gets through, and which process sends it
                # (rank 0 alone, which a multi-rank run's logs let anyone check).
                self._log_once(
                    "delivered",
                    logging.INFO,
                    "first progress report delivered to %s (event %s, step %s); later ones are not logged",
                    self.url,
                    report.get("event"),
                    report.get("step"),
                )
                return "sent", None
            detail, retry_after = "", None
        self._failed()
        if status in (401, 403):
            self._token_read = False  # the mounted Secret may have been rotated
            self._log_once(
                f"http-{status}",
                logging.WARNING,
                "progress endpoint answered %s (%s); re-reading %s and retrying",
                status,
                detail,
                self.token_file,
            )
            return "retry", retry_after
        if status == 429 or status >= 500:
            self._log_once(
                f"http-{status}",
                logging.WARNING,
                "progress endpoint answered %s (%s); retrying with backoff",
                status,
                detail,
            )
            return "retry", retry_after
        self._log_once(
            f"http-{status}",
            logging.WARNING,
            "progress endpoint answered %s (%s); report dropped, later reports still sent",
            status,
            detail,
        )
        return "drop", None

    def _tls_context(self) -> ssl.SSLContext | None:
        """The context that verifies an https:// server (None for http://), built again after a failure."""
        if not self.url.startswith("https://"):
            return None
        if self._tls is None:
            # check_hostname and CERT_REQUIRED are create_default_context's defaults.
            self._tls = ssl.create_default_context(cafile=self.ca_file or None)
        return self._tls

    def _read_token(self) -> str | None:
        if not self._token_read:
            self._token_read = True
            self._token = None
            if self.token_file:
                try:
                    with open(self.token_file) as f:
                        self._token = f.read().strip() or None
                except OSError as error:
                    self._log_once(
                        "token",
                        logging.WARNING,
                        "cannot read the progress token from %s (%s): sending without one",
                        self.token_file,
                        error,
                    )
        return self._token

    def _failed(self) -> None:
        if self.metrics is not None:
            self.metrics.reports_failed.inc()

    def _log_once(self, key: str, level: int, message: str, *args, exc_info: bool = False) -> None:
        if key not in self._logged:
            self._logged.add(key)
            logger.log(level, message, *args, exc_info=exc_info)


def _verification_failed(error: BaseException) -> bool:
    """Whether a failed request failed on the server's certificate (urllib wraps it in URLError)."""
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    return isinstance(reason, ssl.SSLCertVerificationError)


def _verification_reason(error: BaseException) -> str:
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    return getattr(reason, "verify_message", None) or str(reason)


def _error_text(error: urllib.error.HTTPError) -> str:
    try:
        return error.read(300).decode(errors="replace").strip() or error.reason
    except Exception:  # noqa: BLE001 - an unreadable error body still has its reason
        return str(error.reason)


def _retry_after(headers) -> float | None:
    try:
        return max(0.0, float(headers.get("Retry-After")))
    except (TypeError, ValueError, AttributeError):
        return None
