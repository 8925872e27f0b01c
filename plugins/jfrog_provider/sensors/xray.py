"""XrayScanSensor: is the graph scan done yet? (contract X7). Judging is the gate's job, not the sensor's."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowException, AirflowSensorTimeout

from jfrog_provider.links import XRAY_URL_KEY, XrayScanLink, push_link_url, xray_scan_url

if TYPE_CHECKING:
    from airflow.sdk import Context

    from jfrog_provider.hooks.xray import XrayHook


class XrayScanSensor(BaseSensorOperator):
    """Wait for an Xray graph scan; XCom: the parsed result {scan_id, status, vulnerabilities, violations}.

    A result Xray marks as failed, or one that cannot be parsed, fails the task (fail closed).

    :param scan_id: the graph scan id, e.g. from an upstream task's XCom (templated).
    :param poll_interval: seconds between polls.
    :param timeout: seconds before the sensor times out (AirflowSensorTimeout; skip with soft_fail).
    :param deferrable: after one poke, wait in the triggerer instead of a worker slot.
    :param jfrog_conn_id: Airflow connection of type ``jfrog``.
    """

    template_fields: Sequence[str] = ("scan_id", "jfrog_conn_id")
    operator_extra_links = (XrayScanLink(),)

    def __init__(self, *, scan_id: str, poll_interval: float = 5.0, timeout: float = 600.0,
                 deferrable: bool = True, jfrog_conn_id: str = "jfrog_default", **kwargs: Any) -> None:
        super().__init__(poke_interval=poll_interval, timeout=timeout, **kwargs)
        if not isinstance(scan_id, str) and not hasattr(scan_id, "resolve"):
            raise ValueError(f"scan_id must be a string, got {scan_id!r}")
        self.scan_id = scan_id
        self.deferrable = deferrable
        self.jfrog_conn_id = jfrog_conn_id

    @cached_property
    def hook(self) -> XrayHook:
        """The Xray hook for `jfrog_conn_id`."""
        from jfrog_provider.hooks.xray import XrayHook

        return XrayHook(self.jfrog_conn_id)

    def _done(self, context: Context, body: Any) -> dict[str, Any]:
        from jfrog_provider.operators.xray import result_from_body

        result = result_from_body(body)  # raises on malformed / failed results
        url = xray_scan_url(self.hook.config.platform_url, result.scan_id, body)
        push_link_url(context, XRAY_URL_KEY, url)
        self.log.info("Xray scan %s is done: %d vulnerabilities, %d violations", result.scan_id,
                      len(result.vulnerabilities), len(result.violations))
        return {**result.to_dict(), "xray_data_url": url}

    def poke(self, context: Context) -> bool | PokeReturnValue:
        body = self.hook.get_graph_scan_result(self.scan_id)
        if body is None:
            push_link_url(context, XRAY_URL_KEY, xray_scan_url(self.hook.config.platform_url, self.scan_id))
            return False
        return PokeReturnValue(is_done=True, xcom_value=self._done(context, body))

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        poked = self.poke(context)
        if poked:
            return poked.xcom_value if isinstance(poked, PokeReturnValue) else None
        from jfrog_provider.triggers.xray import XrayScanTrigger

        self.defer(trigger=XrayScanTrigger(scan_id=self.scan_id, jfrog_conn_id=self.jfrog_conn_id,
                                           poll_interval=self.poke_interval, timeout=self.timeout),
                   method_name="execute_complete",
                   timeout=timedelta(seconds=self.timeout + max(60.0, 2 * self.poke_interval)))

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Turn the trigger's one event into the XCom value, a sensor timeout or a failure."""
        event = event if isinstance(event, dict) else {}
        if event.get("status") == "success":
            return self._done(context, event.get("result"))
        if event.get("status") == "timeout":
            raise AirflowSensorTimeout(event.get("message") or f"Xray scan {self.scan_id} timed out")
        raise AirflowException(f"Xray scan {self.scan_id} could not be read: {event.get('message') or event!r}")
