"""Feedback joiner benchmark: joins per second of one joiner process, beside the
ceilings of the servers it leans on (pipelined Redis, the Kafka client alone).

    python -m benchmarks.feedback [--joins N] [--baseline DIR]

With `--baseline DIR` (a source tree of an earlier version, `git worktree add DIR REF`)
each round also runs that version's joiner process on the same records and servers.

Writes benchmarks/results/feedback.md and feedback.json.
"""
