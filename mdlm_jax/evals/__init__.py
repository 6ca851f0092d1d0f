"""Evaluators: the validation bound, samples, generative perplexity and the zero-shot sets."""
