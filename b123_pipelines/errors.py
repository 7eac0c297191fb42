"""Errors a sync can end with, each in words a budget123 user or the data team can act on.

A message names the tenant, the accounting system, what went wrong and what to do. It never
contains a secret: connectors build messages from status codes and the source's own error text,
and `redact` scrubs the tenant's secrets from anything written out as a second line of defence.
"""


class SyncError(Exception):
    """A sync failed for a reason we can explain."""

    #: True when the stored credentials were refused and new ones are needed before syncing again.
    needs_new_credentials = False

    def __init__(self, tenant_id: str, system: str, problem: str, action: str):
        self.tenant_id, self.system, self.problem, self.action = tenant_id, system, problem, action
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return f"Tenant '{self.tenant_id}' ({system_label(self.system)}): {self.problem} {self.action}".strip()


class CredentialsRejected(SyncError):
    needs_new_credentials = True


class AccessDenied(SyncError):
    pass


class SourceUnavailable(SyncError):
    """The accounting system did not answer well in time, even after retries."""


class BadSourceData(SyncError):
    """The accounting system answered something we must not load."""


class ConfigurationError(SyncError):
    """The tenant's settings in budget123 are missing or wrong."""


class TenantRemoved(SyncError):
    """The tenant was removed from budget123 while its update ran: nothing more may be loaded."""

    def __init__(self, tenant_id: str, system: str):
        super().__init__(tenant_id, system, "the tenant was removed from budget123 while this update ran, "
                         "so the update stopped without loading more.", "Nothing needs to be done.")


def system_label(system: str) -> str:
    """The system's name as budget123 shows it, from its connector (the registry is the one place)."""
    from b123_pipelines.connectors import CONNECTORS

    connector = CONNECTORS.get(system)
    return connector.label if connector is not None else system


def redact(text: str, secrets) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text
