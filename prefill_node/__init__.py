"""Prefill worker: computes a prompt's KV and first token, and holds the KV for a decode node."""
