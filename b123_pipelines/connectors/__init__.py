"""The registry of accounting systems: adding one is a connector, an emulator and a line here."""

from b123_pipelines.connectors.base import Connector
from b123_pipelines.connectors.business_central import BusinessCentralConnector
from b123_pipelines.connectors.economic import EconomicConnector
from b123_pipelines.connectors.navision_online import NavisionOnlineConnector
from b123_pipelines.connectors.onprem import OnPremConnector
from b123_pipelines.connectors.uniconta import UnicontaConnector

CONNECTORS: dict[str, type[Connector]] = {
    EconomicConnector.system: EconomicConnector,
    BusinessCentralConnector.system: BusinessCentralConnector,
    NavisionOnlineConnector.system: NavisionOnlineConnector,
    OnPremConnector.system: OnPremConnector,
    UnicontaConnector.system: UnicontaConnector,
}


def connector_class(system: str) -> type[Connector]:
    try:
        return CONNECTORS[system]
    except KeyError:
        known = ", ".join(sorted(CONNECTORS))
        raise ValueError(f"unknown accounting system '{system}' (known: {known})") from None
