"""KV over ZMQ: splitmind's own vLLM KV connector, for networks without UCX (see `connector`)."""
