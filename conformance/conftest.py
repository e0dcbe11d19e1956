from tests.conftest import (  # noqa: F401
    ADMIN_PASSWORD,
    _no_external_network,
    admin,
    admin_digest,
    anonymous,
    fresh_nvr,
    nvr,
)
