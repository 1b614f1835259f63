"""A Kite Connect stand-in: Kite's REST and binary ticker protocols over one aiohttp app, a seeded
market model, and fault injection on demand (what moto is for AWS, this is for Kite).

    from ticker.infra.kitesim.app import running_sim
    from ticker.infra.kitesim.config import SimConfig

    async with running_sim(SimConfig(accounts=2, seed=7)) as sim:
        KiteConnect(sim.accounts[0].api_key, sim.accounts[0].access_token, root=sim.url)

Kite's REST side is in `rest.py` (session, instruments, quotes, orders, portfolio, user) and
`rest_trading.py` (GTT triggers, margin calculation, charges, position conversion); GTTs fire on the
stand-in's own prices, which the admin API can move (`POST /_sim/price`).

`ticker sim --help` runs it as a process; the admin API is documented in `admin.py`.
"""
