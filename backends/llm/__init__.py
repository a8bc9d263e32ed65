"""The LLM layer: prefill and decode costs of a model on a deployment, and serving simulation."""
