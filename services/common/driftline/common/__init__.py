"""What every Driftline part shares: settings, connections, Kafka and Redis helpers,
the shared Redis state layouts, and the embedded infrastructure for local runs and tests.

Imports only `driftline.api`. Heavy libraries (torch, mlflow, alibi-detect) never
appear here: a part pays for what it imports, at every pod start.
"""
