//! Turning files into latte's GGUF: re-quantizing a GGUF (`latte quantize`). The checkpoint
//! converter will live here too.

pub mod quantize;
