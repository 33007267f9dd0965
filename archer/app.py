"""The quart-trio application: routes wired to the services they use.

Layer: web. ``create_app`` is the only place routes meet their dependencies; every route module
exposes a blueprint factory that takes ``Services`` explicitly (no module globals, no reading the
environment).
"""

from __future__ import annotations

from typing import Final

import structlog
from quart import request
from quart_trio import QuartTrio

from archer.twilio.form import TwilioFormError
from archer.web.calls import calls_blueprint
from archer.web.health import health_blueprint
from archer.web.media import media_blueprint
from archer.web.metrics import metrics_blueprint
from archer.web.outbound_webhooks import outbound_webhooks_blueprint
from archer.web.recording import recording_blueprint
from archer.web.services import Services
from archer.web.status import status_blueprint
from archer.web.voice import voice_blueprint

log = structlog.get_logger(__name__)

#: Twilio's webhook bodies are a few hundred bytes of form fields; anything large is not Twilio.
MAX_WEBHOOK_BYTES: Final = 64 * 1024


def create_app(services: Services) -> QuartTrio:
    """The ASGI application serving Twilio's webhooks, the media stream and health checks."""
    app = QuartTrio("archer")
    app.config["MAX_CONTENT_LENGTH"] = MAX_WEBHOOK_BYTES
    app.register_blueprint(voice_blueprint(services))
    app.register_blueprint(status_blueprint(services))
    app.register_blueprint(recording_blueprint(services))
    app.register_blueprint(media_blueprint(services))
    app.register_blueprint(health_blueprint(services))
    app.register_blueprint(metrics_blueprint(services.metrics))
    app.register_blueprint(calls_blueprint(services))
    app.register_blueprint(outbound_webhooks_blueprint(services))

    @app.errorhandler(TwilioFormError)
    async def malformed_twilio_form(error: TwilioFormError) -> tuple[str, int]:  # noqa: ASYNC124
        # Signed but not what Twilio sends (issue 19): refused before anything is written.
        # The message names the field, never its value.
        log.warning("twilio.form_rejected", path=request.path, error=str(error))
        return str(error), 400

    return app
