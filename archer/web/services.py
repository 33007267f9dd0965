"""What the routes need, built once by the server and handed to every blueprint factory.

Layer: web. It lives in a module of its own so the route modules (``archer.web.*``) and the
application factory (``archer.app``) both import it and neither imports the other: the routes sit
below the app, never beside it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

from archer.metrics import Metrics
from archer.web.capacity import Capacity
from archer.web.drain import Drain

if TYPE_CHECKING:
    from archer.call.ports import (
        AgentConnector,
        CallFacts,
        CallStore,
        OutboundQueue,
        OutboundTelephony,
        RecordSpool,
    )
    from archer.call.tools import ToolRegistry
    from archer.settings import Settings
    from archer.twilio.signature import SignatureChecker


@attrs.frozen(kw_only=True)
class Services:
    """What the routes need, built once by the server and passed explicitly."""

    settings: Settings
    store: CallStore
    agents: AgentConnector
    tools: ToolRegistry
    signatures: SignatureChecker
    spool: RecordSpool
    drain: Drain = attrs.Factory(Drain)
    metrics: Metrics = attrs.Factory(Metrics)
    #: MAX_ACTIVE_CALLS against the calls ``drain`` counts (built from them unless given).
    capacity: Capacity = attrs.Factory(
        lambda self: Capacity(self.settings.max_active_calls, self.drain), takes_self=True
    )
    #: The outbound queue behind ``POST /calls`` (issue 22); None: those routes answer 503.
    outbound: OutboundQueue | None = None
    #: The REST side of outbound calls (the voicemail, the fax hang-up).
    outbound_telephony: OutboundTelephony | None = None
    #: What an outbound call is about, read when its stream starts; None while outbound is off
    #: (``OUTBOUND_FROM_NUMBER`` empty), so an inbound call costs no extra query.
    call_facts: CallFacts | None = None
