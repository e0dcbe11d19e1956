"""The compiled response renderer writes exactly what zeep writes, and refuses what zeep would."""

from __future__ import annotations

import copy

import pytest
from lxml import etree

from onvif_nvr.soap.render import CompiledElement, RenderError
from onvif_nvr.wsdl.catalog import DEVICE, load_binding

BINDING = load_binding(DEVICE)


def both(operation: str, value: dict) -> tuple[bytes, bytes]:
    element = BINDING.operations[operation].output
    ours, theirs = etree.Element("a"), etree.Element("a")
    # Rendering moves any lxml elements inside the value: each side gets its own copy.
    CompiledElement(element).render(ours, copy.deepcopy(value))
    element.render(theirs, copy.deepcopy(value))
    return etree.tostring(ours), etree.tostring(theirs)


@pytest.mark.parametrize(
    ("operation", "value"),
    [
        (
            "GetDeviceInformation",
            {
                "Manufacturer": "m",
                "Model": "x",
                "FirmwareVersion": "1",
                "SerialNumber": "s",
                "HardwareId": "h",
            },
        ),
        (
            "GetScopes",
            {
                "Scopes": [
                    {"ScopeDef": "Fixed", "ScopeItem": "onvif://www.onvif.org/a"},
                    {"ScopeDef": "Configurable", "ScopeItem": "onvif://www.onvif.org/b"},
                ]
            },
        ),
        (
            "GetNetworkProtocols",
            {"NetworkProtocols": [{"Name": "HTTP", "Enabled": True, "Port": [80, 8080]}]},
        ),
        (
            "GetServiceCapabilities",
            {
                "Capabilities": {
                    "Network": {"NTP": 4, "IPFilter": False},
                    "Security": {"TLS1.2": False, "HashingAlgorithms": ["MD5", "SHA-256"]},
                    "System": {},
                    "Misc": {},
                }
            },
        ),
        ("GetUsers", {"User": [{"Username": "a", "UserLevel": "Administrator"}]}),
        ("SystemReboot", {"Message": "bye"}),
        ("SetHostname", {}),
        (
            "GetStorageConfigurations",
            {
                "StorageConfigurations": [
                    {
                        "token": "s0",
                        "Data": {
                            "type": "LocalStorage",
                            "LocalPath": "/d",
                            "Extension": {"_value_1": [etree.Element("{urn:x}V")]},
                        },
                    }
                ]
            },
        ),
    ],
)
def test_same_bytes_as_zeep(operation, value):
    ours, theirs = both(operation, value)
    assert ours == theirs


def test_missing_required_and_unknown_fields_are_errors():
    element = CompiledElement(BINDING.operations["GetDeviceInformation"].output)
    with pytest.raises(RenderError, match="needs Manufacturer"):
        element.render(
            etree.Element("a"),
            {"Model": "x", "FirmwareVersion": "1", "SerialNumber": "s", "HardwareId": "h"},
        )
    with pytest.raises(RenderError, match="has no Colour"):
        element.render(
            etree.Element("a"),
            {
                "Manufacturer": "m",
                "Model": "x",
                "FirmwareVersion": "1",
                "SerialNumber": "s",
                "HardwareId": "h",
                "Colour": 1,
            },
        )
