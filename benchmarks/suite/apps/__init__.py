"""The peers' servers: each runs in the peer's own virtual environment, not ours."""
