"""``python -m onvif_nvr.api > docs/api/openapi.json``: print the OpenAPI document."""

import sys

from onvif_nvr.api.endpoints import document_text

sys.stdout.write(document_text())
