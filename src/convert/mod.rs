//! Turning files into latte's GGUF: re-quantizing a GGUF (`latte quantize`).
