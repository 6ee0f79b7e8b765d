"""OpenAI-compatible LLM client shared by every stage that calls a model endpoint."""
