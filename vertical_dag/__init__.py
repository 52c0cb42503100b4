"""vertical_dag: raw industry documents -> an evaluated, domain-adapted language model."""

__version__ = "0.1.0"
