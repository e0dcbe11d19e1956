"""ONVIF SOAP front-ends: translate protocol to domain calls and back, nothing more."""
