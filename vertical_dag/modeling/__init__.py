"""torch/transformers code: model import, packing, replay, training loops, generation, perplexity.

Nothing here knows of Dagster or DVC; stages call these functions with plain paths and numbers.
"""
