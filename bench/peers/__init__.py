"""The peers bench.versus measures Slipstream against: arq, BullMQ (bullmq/) and DBOS.

These modules run in the peers' own venv (.venv/peers, made by `make bench` from
requirements.txt), not in Slipstream's: arq pins redis-py below 6, Slipstream's
tests run on 8.
"""
