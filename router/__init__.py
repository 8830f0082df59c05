"""The router: worker registry, health, routing policy, prefill/decode orchestration."""
