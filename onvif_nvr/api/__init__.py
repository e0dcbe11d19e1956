"""The REST front-end: JSON at ``/api/v1/...`` on the box's one aiohttp server, with its
OpenAPI document generated from the route table (docs/design/api.md, ADR 0007)."""
