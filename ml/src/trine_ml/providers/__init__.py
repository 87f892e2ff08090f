"""LLM providers: each turns a query and its retrieved passages into a cited answer."""

from trine_ml.providers.base import Answer, LLMProvider, Passage

__all__ = ["Answer", "LLMProvider", "Passage"]
