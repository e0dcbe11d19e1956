"""Real SOAP clients for the tests: plain zeep, with WS-UsernameToken or HTTP Digest.

zeep runs in the test process (the server is a separate process); onvif-zeep-async
lives in its own virtual environment (tests/peers/), because it ships a top-level
``onvif`` package that collides with the onvif-python package the server needs.
"""

from __future__ import annotations

import requests
import zeep
from requests.auth import HTTPDigestAuth
from zeep.wsse.username import UsernameToken

from onvif_nvr.wsdl.catalog import DEVICE, wsdl_root

DEVICE_BINDING = DEVICE.binding_qname


def device_client(
    url: str, user: str | None = None, password: str | None = None, *, digest: bool = False
):
    """A zeep service proxy for the device service at ``url``."""
    session = requests.Session()
    wsse = None
    if user is not None and password is not None:
        if digest:
            session.auth = HTTPDigestAuth(user, password)
        else:
            wsse = UsernameToken(user, password, use_digest=True)
    transport = zeep.Transport(session=session, timeout=20, operation_timeout=20)
    client = zeep.Client(
        str(wsdl_root() / DEVICE.wsdl),
        wsse=wsse,
        transport=transport,
        settings=zeep.Settings(strict=False),
    )
    return client, client.create_service(DEVICE_BINDING, url)
