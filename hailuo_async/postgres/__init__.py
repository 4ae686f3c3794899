"""Coordination of many processes through PostgreSQL (the ``postgres`` extra).

- :class:`SharedAccountLimits`: the account's request rate, active-job cap and 429 pauses,
  shared by every process that names the same account;
- :class:`PostgresPushBus`: a webhook received by any process reaches the process that
  watches its task.
"""

from ._common import CoordinationError, account_name
from ._limits import (
    ActiveJobCount,
    Reservation,
    SharedAccountLimits,
    SharedActiveJobLimit,
    SharedRequestLimiter,
)
from ._push import PostgresPushBus, PushNotice
from ._schema import LIMITS_SCHEMA_VERSION

__all__ = [
    "LIMITS_SCHEMA_VERSION",
    "ActiveJobCount",
    "CoordinationError",
    "PostgresPushBus",
    "PushNotice",
    "Reservation",
    "SharedAccountLimits",
    "SharedActiveJobLimit",
    "SharedRequestLimiter",
    "account_name",
]
