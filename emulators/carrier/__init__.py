"""A Twilio-compatible carrier on loopback: the REST subset the platform uses, signed webhooks,
TwiML execution, Media Streams, and simulated handsets (the softphone and the test client)."""
