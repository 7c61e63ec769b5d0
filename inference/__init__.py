"""Text generation: our batched, paged-KV torch engine and the vLLM adapter behind one interface."""
