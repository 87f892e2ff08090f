"""trine's internal ML service: embeddings, retrieval and LLM answers for RAG."""

__version__ = "0.1.0"
