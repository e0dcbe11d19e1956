"""Generic SOAP 1.2/1.1 machinery: envelope, faults, WS-Security, WSDL-driven dispatch.

Nothing here knows about video recording; the ONVIF services plug handlers into it.
"""
