"""The alerts' webhook: each notification POSTed as JSON to a configured URL from a thread of its own.

:meth:`Webhook.send` only puts the payload on a bounded queue, so neither an evaluation nor a request ever waits
for the receiver. The sender thread POSTs each payload, retrying a failure (a connection error, a timeout, a
non-2xx reply) after ``backoff_s``, doubled each attempt, at most ``retries`` times; every failed attempt counts
in ``quantcrew_alert_webhook_failures_total``, and a payload given up (or refused by a full queue) in
``quantcrew_alert_webhook_undelivered_total``. The alert itself is stored whatever the webhook does.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from typing import TYPE_CHECKING, Any

import httpx
import orjson

if TYPE_CHECKING:
    from quantcrew.ml_server.metrics import Metrics

__all__ = ["Webhook"]

logger = logging.getLogger("quantcrew.ml_server.monitor")

_QUEUE_MAX = 10_000


class Webhook:
    """POSTs alert notifications to ``url`` in the background.

    Args:
        url: The receiver.
        retries: Attempts after the first.
        backoff_s: Wait before the first retry; doubled each retry.
        timeout_s: One attempt's timeout.
        metrics: Where failures are counted (None: not counted).
        max_backoff_s: Cap on one wait.
    """

    def __init__(self, url: str, *, retries: int = 5, backoff_s: float = 0.5, timeout_s: float = 5.0,
                 metrics: Metrics | None = None, max_backoff_s: float = 60.0) -> None:
        self.url = url
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.metrics = metrics
        self.delivered = 0
        self.failed_attempts = 0
        self.undelivered = 0
        self._queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=_QUEUE_MAX)
        self._stop = threading.Event()
        self._http = httpx.Client(timeout=timeout_s, headers={"content-type": "application/json",
                                                              "user-agent": "quantcrew-alerts"})
        self._idle = threading.Condition()
        self._busy = 0
        self._thread = threading.Thread(target=self._run, name="quantcrew-alert-webhook", daemon=True)
        self._thread.start()

    def send(self, payload: dict[str, Any]) -> bool:
        """Queue ``payload`` for delivery; False (and counted undelivered) when the queue is full or closed."""
        if self._stop.is_set():
            return False
        with self._idle:
            self._busy += 1
        try:
            self._queue.put_nowait(payload)
        except queue.Full:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()
            self._undelivered("the webhook queue is full")
            return False
        return True

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every queued payload is delivered or given up; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._busy == 0, timeout=timeout_s)

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop the sender: retries waiting are abandoned (counted undelivered), the thread joined."""
        self._stop.set()
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(None)
        self._thread.join(timeout_s)
        self._http.close()

    def _run(self) -> None:
        while True:
            payload = self._queue.get()
            if payload is None:
                return
            try:
                self._deliver(payload)
            except Exception:  # noqa: BLE001 - the sender thread must outlive anything one payload does
                logger.exception("alert webhook: unexpected error")
            finally:
                with self._idle:
                    self._busy -= 1
                    self._idle.notify_all()

    def _deliver(self, payload: dict[str, Any]) -> None:
        body = orjson.dumps(payload, default=str)
        for attempt in range(self.retries + 1):
            if attempt and self._stop.wait(min(self.max_backoff_s, self.backoff_s * 2.0 ** (attempt - 1))):
                break  # closing: the remaining retries are abandoned
            try:
                reply = self._http.post(self.url, content=body)
                if reply.is_success:
                    self.delivered += 1
                    if self.metrics is not None:
                        self.metrics.alert_notifications.labels("webhook", str(payload.get("kind", "?"))).inc()
                    return
                reason = f"HTTP {reply.status_code}"
            except httpx.HTTPError as exc:
                reason = f"{type(exc).__name__}: {exc}"
            self.failed_attempts += 1
            if self.metrics is not None:
                self.metrics.webhook_failures.inc()
            logger.warning("alert webhook %s: attempt %d of %d failed (%s)", self.url, attempt + 1,
                           self.retries + 1, reason)
        self._undelivered(f"gave up after {self.retries + 1} attempts")

    def _undelivered(self, why: str) -> None:
        self.undelivered += 1
        if self.metrics is not None:
            self.metrics.webhook_undelivered.inc()
        logger.error("alert webhook %s: a notification was not delivered: %s", self.url, why)
