"""smtpbee: a sans-I/O SMTP client."""

from ._errors import *  # noqa: F403
from ._replies import EnhancedStatus, Reply, ReplyClass

__version__ = "0.1.0"
