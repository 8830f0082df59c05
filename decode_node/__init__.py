"""Decode worker: pulls a prompt's KV from a prefill node (or prefills locally) and decodes."""
