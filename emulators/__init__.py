"""Local stand-ins for the outside services, speaking their real protocols.

Never imported by production code paths except through configuration (the local adapters
point the real clients at these servers).
"""
