"""A Kite Connect stand-in: Kite's REST and binary ticker protocols over one aiohttp app, a seeded
market model, and fault injection on demand (what moto is for AWS, this is for Kite).

It enforces Kite's 2026 rules: the version header and per-user rate limits (app.py, limits.py),
market protection, freeze quantity and autoslice, variety fields (order_rules.py), signed
postbacks (postbacks.py); and NSE's, as dated data: contract specifications (core/contract_specs.py,
the table our order intake checks too) and the trading-holiday calendar (core/holidays.py), so the
universe of any day is that day's.

    from ticker.infra.kitesim.server import running_sim
    from ticker.infra.kitesim.config import SimConfig

    async with running_sim(SimConfig(accounts=2, seed=7)) as sim:
        KiteConnect(sim.accounts[0].api_key, sim.accounts[0].access_token, root=sim.url)

Kite's REST side is in `rest.py` (session, instruments, quotes, orders, portfolio, user) and
`rest_trading.py` (GTT triggers, margin calculation, charges, position conversion); GTTs fire on the
stand-in's own prices, which the admin API can move (`POST /_sim/price`).

`ticker sim --help` runs it as a process; the admin API is documented in `admin.py`.
"""
