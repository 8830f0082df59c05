"""The gateway's HTTP edge: OpenAI-compatible API, SSE streaming, reasoning split, ops endpoints."""
