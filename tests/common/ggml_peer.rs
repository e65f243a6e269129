//! ggml's own code as a test oracle and benchmark peer (feature `ggml-peer`): `ggml_quantize_chunk`
//! ([`ggml_quantize`]) and `ggml_mul_mat` on its CPU backend ([`GgmlMatmul`]). Shared by the
//! `tests/ggml_peer_*.rs` tests and `benches/matmul.rs`.
//!
//! One context holds W (the caller's quantized bytes, copied once), x and the result; the graph,
//! its work buffer and a thread pool are made once, so `run` only copies x in, computes, and
//! copies y out — what a caller of ggml pays per matmul.

// Each test crate that includes this module uses part of it.
#![allow(dead_code)]

use std::ptr::{copy_nonoverlapping, null_mut};

use latte::dtype::TensorType;
use llama_cpp_sys_2 as sys;

/// What ggml's `ggml_quantize_chunk` (no importance matrix: `quantize_row_*_ref`) makes of `src`, rows
/// of `row_len` values, as type `ty`.
pub fn ggml_quantize(ty: TensorType, src: &[f32], row_len: usize) -> Vec<u8> {
    let n_rows = src.len() / row_len;
    assert_eq!(n_rows * row_len, src.len());
    let mut dst = vec![0u8; ty.row_bytes(row_len as u64).unwrap() as usize * n_rows];
    // SAFETY: `src` holds n_rows · row_len floats and `dst` exactly n_rows rows of `ty`, which is what
    // ggml_quantize_chunk reads and writes with start = 0 and no importance matrix.
    let written = unsafe {
        sys::ggml_quantize_chunk(
            ty.id() as sys::ggml_type,
            src.as_ptr(),
            dst.as_mut_ptr().cast(),
            0,
            n_rows as i64,
            row_len as i64,
            std::ptr::null(),
        )
    };
    assert_eq!(written, dst.len());
    dst
}

pub struct GgmlMatmul {
    ctx: *mut sys::ggml_context,
    graph: *mut sys::ggml_cgraph,
    pool: *mut sys::ggml_threadpool,
    plan: sys::ggml_cplan,
    _work: Vec<u8>,
    x: *mut sys::ggml_tensor,
    y: *mut sys::ggml_tensor,
    n_in: usize,
    n_out: usize,
}

impl GgmlMatmul {
    /// `y = W·x` for W of type `ty`, ggml dims [k, m] (`w` its bytes), x of n rows of k, on
    /// `n_threads` threads.
    pub fn new(ty: TensorType, k: usize, m: usize, n: usize, w: &[u8], n_threads: usize) -> Self {
        assert_eq!(Some(w.len() as u64), ty.row_bytes((k * m) as u64));
        // SAFETY: plain calls into ggml's C API with sizes computed above; every tensor lives in
        // the context, which is big enough for the three tensors, the graph and their overheads.
        unsafe {
            sys::ggml_cpu_init();
            let mem = w.len()
                + 4 * (n * k + n * m)
                + 3 * sys::ggml_tensor_overhead()
                + sys::ggml_graph_overhead()
                + (1 << 20);
            let ctx = sys::ggml_init(sys::ggml_init_params {
                mem_size: mem,
                mem_buffer: null_mut(),
                no_alloc: false,
            });
            assert!(!ctx.is_null(), "ggml_init failed");
            let wt = sys::ggml_new_tensor_2d(ctx, ty.id() as _, k as i64, m as i64);
            copy_nonoverlapping(w.as_ptr(), (*wt).data as *mut u8, w.len());
            let x = sys::ggml_new_tensor_2d(ctx, TensorType::F32.id() as _, k as i64, n as i64);
            let y = sys::ggml_mul_mat(ctx, wt, x);
            let graph = sys::ggml_new_graph(ctx);
            sys::ggml_build_forward_expand(graph, y);
            let mut params = sys::ggml_threadpool_params_default(n_threads as i32);
            let pool = sys::ggml_threadpool_new(&mut params);
            assert!(!pool.is_null(), "ggml_threadpool_new failed");
            let mut plan = sys::ggml_graph_plan(graph, n_threads as i32, pool);
            let mut work = vec![0u8; plan.work_size.max(1)];
            plan.work_data = work.as_mut_ptr();
            GgmlMatmul {
                ctx,
                graph,
                pool,
                plan,
                _work: work,
                x,
                y,
                n_in: n * k,
                n_out: n * m,
            }
        }
    }

    pub fn run(&mut self, x: &[f32], y: &mut [f32]) {
        assert_eq!(x.len(), self.n_in);
        assert_eq!(y.len(), self.n_out);
        // SAFETY: x and y tensors hold n_in / n_out f32s (made in `new`); the plan's work buffer
        // and thread pool live as long as self.
        unsafe {
            copy_nonoverlapping(x.as_ptr(), (*self.x).data as *mut f32, self.n_in);
            let status = sys::ggml_graph_compute(self.graph, &mut self.plan);
            assert_eq!(status, sys::GGML_STATUS_SUCCESS, "ggml compute failed");
            copy_nonoverlapping((*self.y).data as *const f32, y.as_mut_ptr(), self.n_out);
        }
    }
}

impl Drop for GgmlMatmul {
    fn drop(&mut self) {
        // SAFETY: both were created in `new` and are freed once.
        unsafe {
            sys::ggml_threadpool_free(self.pool);
            sys::ggml_free(self.ctx);
        }
    }
}

// llama-quantize logs every tensor it writes; test output wants only failures.
unsafe extern "C" fn quiet_log(
    _level: sys::ggml_log_level,
    _text: *const std::os::raw::c_char,
    _user: *mut std::os::raw::c_void,
) {
}

/// What llama.cpp's `llama-quantize` makes of the GGUF `input` for file type `ftype` (a
/// `LLAMA_FTYPE_MOSTLY_*`, with llama.cpp's own per-tensor choices and fallbacks), written to `output`.
pub fn llama_quantize(input: &std::path::Path, output: &std::path::Path, ftype: sys::llama_ftype) {
    let c = |p: &std::path::Path| std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    let (input, output) = (c(input), c(output));
    // SAFETY: llama_model_quantize reads the two NUL-terminated paths and the parameters, which
    // start from llama.cpp's defaults (no importance matrix, overrides or pruning lists).
    let code = unsafe {
        sys::llama_backend_init();
        sys::llama_log_set(Some(quiet_log), null_mut());
        let mut params = sys::llama_model_quantize_default_params();
        params.ftype = ftype;
        params.nthread = 2;
        sys::llama_model_quantize(input.as_ptr(), output.as_ptr(), &params)
    };
    assert_eq!(code, 0, "llama_model_quantize failed");
}
