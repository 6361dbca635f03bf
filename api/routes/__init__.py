"""The API's routes, one module per audience: Twilio's webhooks, the hotline's conductor (the voice
agent thinks with it), the agents' platform MCP server and their links to MMS attachments (media),
and the internal endpoints (health, the local outbox). Handlers take what they need from api.deps."""
