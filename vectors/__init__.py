"""Steering-vector maths and GGUF control-vector files: pure numpy + gguf (no llama_cpp, no UI)."""
