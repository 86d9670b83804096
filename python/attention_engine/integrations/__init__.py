"""Integrations with other libraries. Each submodule imports its library on import, never
before: `import attention_engine.integrations.transformers` registers the engine as a
Hugging Face Transformers attention implementation."""
