"""How KV moves between nodes: connector configuration and transfer metrics."""
