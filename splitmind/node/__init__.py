"""The worker runtime both node roles use: engine construction, ZMQ server, stats."""
