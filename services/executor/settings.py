"""Executor settings: the shared process ``Settings`` (brokers, topics, config path, secrets)
plus the knobs only the executor has. Built once at start (``serve``) and passed down; nothing
in the executor reads the environment (STYLE 15)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from services.runtime.settings import Settings, flag, positive_int


@dataclass(frozen=True)
class ExecutorSettings:
    """* ``max_in_flight``: plans executed at once by one executor (``LLMGW_MAX_IN_FLIGHT``,
      default 512); past it the consumer pauses its partitions.
    * ``provider_trust_env`` (``LLMGW_PROVIDER_TRUST_ENV``): provider calls honour the proxy
      variables and ``.netrc``.
    * ``provider_max_connections`` (``LLMGW_PROVIDER_MAX_CONNECTIONS``, 512): connections the
      provider client keeps open at most.
    * ``fault_exit_after_publish`` (``LLMGW_FAULT_EXIT_AFTER_PUBLISH``, a request id; tests only):
      once every output of that request is acknowledged, and before its plan's offset is committed,
      the process exits at once (status 137, as if SIGKILLed): the deterministic point between "the
      provider answered" and "the plan is committed" that the crash tests need.
    * ``fault_exit_mid_batch`` (``LLMGW_FAULT_EXIT_MID_BATCH``, a ``batch.run`` request id; tests
      only): once the records of half that run's items are acknowledged (and before the rest and
      the run's own), the process exits at once (status 137): a provider batch's run dying while it
      publishes what its items did.
    """

    runtime: Settings = field(default_factory=Settings)
    max_in_flight: int = 512
    provider_trust_env: bool = False
    provider_max_connections: int = 512
    fault_exit_after_publish: str | None = None
    fault_exit_mid_batch: str | None = None

    @classmethod
    def from_env(
        cls, runtime: Settings | None = None, env: Mapping[str, str] | None = None
    ) -> ExecutorSettings:
        """From ``runtime.env`` (the environment the process read at start), or from ``env``."""
        rt = runtime or Settings.from_env(env)
        e = rt.env if env is None else env
        return cls(
            runtime=rt,
            max_in_flight=positive_int(e, "LLMGW_MAX_IN_FLIGHT", cls.max_in_flight),
            provider_trust_env=flag(e, "LLMGW_PROVIDER_TRUST_ENV", cls.provider_trust_env),
            provider_max_connections=positive_int(
                e, "LLMGW_PROVIDER_MAX_CONNECTIONS", cls.provider_max_connections
            ),
            fault_exit_after_publish=e.get("LLMGW_FAULT_EXIT_AFTER_PUBLISH") or None,
            fault_exit_mid_batch=e.get("LLMGW_FAULT_EXIT_MID_BATCH") or None,
        )

    @classmethod
    def of(cls, settings: Settings | ExecutorSettings) -> ExecutorSettings:
        """Executor settings from either kind (plain ``Settings``: from their ``env``)."""
        return settings if isinstance(settings, ExecutorSettings) else cls.from_env(runtime=settings)
