"""Hand-built SOAP requests for the tests that need exact bytes on the wire."""

from __future__ import annotations

import base64
import datetime
import hashlib
import os

import requests

SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
SOAP11 = "http://schemas.xmlsoap.org/soap/envelope/"
TDS = "http://www.onvif.org/ver10/device/wsdl"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
DIGEST_TYPE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest"
TEXT_TYPE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordText"


def utc_now_text(offset_s: float = 0) -> str:
    now = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=offset_s)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def username_token(
    user: str,
    password: str,
    *,
    nonce: bytes | None = None,
    created: str | None = None,
    drop: tuple[str, ...] = (),
    password_type: str | None = DIGEST_TYPE,
) -> str:
    """A wsse:Security header; ``drop`` leaves out "Nonce", "Created" or "Type"."""
    nonce = nonce if nonce is not None else os.urandom(16)
    created = created or utc_now_text()
    if password_type == TEXT_TYPE:
        secret = password
    else:
        secret = base64.b64encode(
            hashlib.sha1(nonce + created.encode() + password.encode()).digest()
        ).decode()
    type_attr = f' Type="{password_type}"' if password_type and "Type" not in drop else ""
    parts = [
        f"<wsse:Username>{user}</wsse:Username>",
        f"<wsse:Password{type_attr}>{secret}</wsse:Password>",
    ]
    if "Nonce" not in drop:
        parts.append(f"<wsse:Nonce>{base64.b64encode(nonce).decode()}</wsse:Nonce>")
    if "Created" not in drop:
        parts.append(f"<wsu:Created>{created}</wsu:Created>")
    return (
        f'<wsse:Security xmlns:wsse="{WSSE}" xmlns:wsu="{WSU}"><wsse:UsernameToken>'
        + "".join(parts)
        + "</wsse:UsernameToken></wsse:Security>"
    )


def envelope(body: str, header: str = "", soap_ns: str = SOAP12) -> bytes:
    head = f"<s:Header>{header}</s:Header>" if header else ""
    return f'<?xml version="1.0" encoding="UTF-8"?><s:Envelope xmlns:s="{soap_ns}">{head}<s:Body>{body}</s:Body></s:Envelope>'.encode()


def post(
    url: str,
    data: bytes,
    *,
    soap_ns: str = SOAP12,
    auth: object = None,
    headers: dict | None = None,
) -> requests.Response:
    content_type = (
        "application/soap+xml; charset=utf-8" if soap_ns == SOAP12 else "text/xml; charset=utf-8"
    )
    return requests.post(
        url,
        data=data,
        headers={"Content-Type": content_type, **(headers or {})},
        auth=auth,
        timeout=20,
    )


def op(name: str, inner: str = "") -> str:
    return f'<tds:{name} xmlns:tds="{TDS}">{inner}</tds:{name}>'
