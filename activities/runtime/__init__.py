"""AgentRuntime: one isolated OpenClaw gateway per user, locally as a process or on Kubernetes."""
