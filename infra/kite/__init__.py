"""The Kite Connect adapter: the only code that speaks Kite's protocols.

- `rest`: the REST client (`KiteHttp` session, `KiteApi` per account) and Kite's error classes;
- `schemas`: the typed answers of the REST calls;
- `ticker_socket`, `ticker_pool`: the ticker WebSocket, one connection and an account's connections;
  frames go to a `FrameSink` the owning process provides;
- `login`: the browser-free login that yields a request token;
- `clients`: per-account clients with their credentials cached; `account_choice`: which account
  serves a data call;
- `limits`, `breaker`: Kite's rate limits and a per-account circuit breaker, shared through Redis;
- `egress`: which calls leave through the static-IP proxy.
"""
