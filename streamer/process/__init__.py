"""The streamer as a process: its entry point, the wiring of pipeline and control, ownership of
background tasks, metrics, backpressure and the /health and /metrics surface."""
