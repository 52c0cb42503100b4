"""Quality gates: one Great Expectations suite per stage over a profile table of the stage's output.

`gate.run_gate` validates a stage and writes data/gates/<stage>.json (+ .md). Great Expectations is imported
only inside the functions that validate, so commands that don't validate start fast.
"""
