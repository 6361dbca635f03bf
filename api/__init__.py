"""The FastAPI app: Twilio webhooks, the dashboard, the internal API."""
