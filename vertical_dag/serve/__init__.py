"""Inference for applications: the OpenAI-compatible local server (app, engine) over modeling/."""
