"""User levels and the ONVIF default access policy (Core §5.9.4)."""

from __future__ import annotations

import enum
from collections.abc import Mapping

from onvif_nvr.auth import _access_table


class UserLevel(enum.StrEnum):
    ADMINISTRATOR = "Administrator"
    OPERATOR = "Operator"
    USER = "User"
    ANONYMOUS = "Anonymous"
    EXTENDED = "Extended"


class AccessClass(enum.StrEnum):
    PRE_AUTH = "PRE_AUTH"
    READ_SYSTEM = "READ_SYSTEM"
    READ_SYSTEM_SENSITIVE = "READ_SYSTEM_SENSITIVE"
    READ_SYSTEM_SECRET = "READ_SYSTEM_SECRET"
    WRITE_SYSTEM = "WRITE_SYSTEM"
    WRITE_SYSTEM_SECRET = "WRITE_SYSTEM_SECRET"
    UNRECOVERABLE = "UNRECOVERABLE"
    READ_MEDIA = "READ_MEDIA"
    ACTUATE = "ACTUATE"


_A, _O, _U = UserLevel.ADMINISTRATOR, UserLevel.OPERATOR, UserLevel.USER

#: Which levels may use each class under the default policy.
DEFAULT_POLICY: Mapping[AccessClass, frozenset[UserLevel]] = {
    AccessClass.PRE_AUTH: frozenset({_A, _O, _U, UserLevel.ANONYMOUS}),
    AccessClass.READ_SYSTEM: frozenset({_A, _O, _U}),
    AccessClass.READ_SYSTEM_SENSITIVE: frozenset({_A, _O}),
    AccessClass.READ_SYSTEM_SECRET: frozenset({_A}),
    AccessClass.WRITE_SYSTEM: frozenset({_A}),
    AccessClass.WRITE_SYSTEM_SECRET: frozenset({_A}),
    AccessClass.UNRECOVERABLE: frozenset({_A}),
    AccessClass.READ_MEDIA: frozenset({_A, _O, _U}),
    AccessClass.ACTUATE: frozenset({_A, _O}),
}

#: Access-class tables by the specification that defines the service.
_TABLES: Mapping[str, Mapping[str, str]] = {
    "core": _access_table.CORE,
    "media": _access_table.MEDIA,
    "media2": _access_table.MEDIA2,
    "recording": _access_table.RECORDING,
    "search": _access_table.SEARCH,
    "replay": _access_table.REPLAY,
    "receiver": _access_table.RECEIVER,
}


def access_class(spec: str, operation: str) -> AccessClass:
    """The class of ``operation`` in the service defined by ``spec``; an operation the
    specifications do not class is treated as UNRECOVERABLE (administrators only)."""
    name = _TABLES[spec].get(operation)
    return AccessClass(name) if name else AccessClass.UNRECOVERABLE


def allowed(level: UserLevel, cls: AccessClass) -> bool:
    return level in DEFAULT_POLICY[cls]
