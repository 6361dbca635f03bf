"""The voice bridge: Twilio Media Streams <-> Deepgram Voice Agent, and the LLM proxy to each user's OpenClaw."""
