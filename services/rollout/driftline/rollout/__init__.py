"""The rollout controller: a pure state machine (shadow, canary steps, promote or roll
back) and the thin driver that carries out its actions.
"""
