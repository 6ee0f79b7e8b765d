"""The phi-1 model: presets (PhiForCausalLM configurations) and the tokenizer."""
