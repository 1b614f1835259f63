"""The streaming process: Kite sockets (`pool`, `connection`) feed the pipeline in `stages`
(decode → batch → enrich → render → publish); `control` decides what streams on which account and
replica; `process` runs it all (entry point, wiring, task ownership, metrics, /health)."""
