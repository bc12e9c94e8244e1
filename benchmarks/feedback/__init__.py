"""Feedback joiner benchmark: joins per second of one joiner process, beside the
ceilings of the servers it leans on (pipelined Redis, the Kafka client alone).

    python -m benchmarks.feedback [--joins N]

Writes benchmarks/results/feedback.md and feedback.json.
"""
