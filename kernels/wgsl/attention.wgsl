// Attention for one chunk of query rows, in three passes over a score buffer s [heads, rows, n_kv]
// (rows = the chunk's queries, starting at query i0):
//   attention_scores:  s[h, r, j] = scale · q_i · k_j for the keys query i sees
//   attention_softmax: per row, the TCRA block (pre-softmax bias and readout), softmax over the
//                      visible keys, then the post-softmax bias, renormalisation and readout
//   attention_values:  out[i, h, :] = Σ_j s[h, r, j] · v_j
// q is [n_q, heads, d], k and v [n_kv, kv_heads, d] (query head h reads KV head h / (heads /
// kv_heads)); with `causal`, query i sees keys j ≤ i + offset. The block covers key columns
// col0 .. col0 + n_cols; `gate`/`prev` give its bias gate[h]·prev[h, i, c], `readout` receives it
// ([heads, n_q, n_cols]). Mode 0: no block, 1: pre-softmax, 2: post-softmax.

struct Params {
    n_q: u32,
    n_kv: u32,
    heads: u32,
    kv_heads: u32,
    d: u32,
    q_off: u32,
    k_off: u32,
    v_off: u32,
    out_off: u32,
    i0: u32,
    rows: u32,
    causal: u32,
    offset: u32,
    scale: f32,
    mode: u32,
    col0: u32,
    n_cols: u32,
    has_add: u32,
    has_readout: u32,
    prev_off: u32,
    gate_off: u32,
    readout_off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;

fn visible(i: u32) -> u32 {
    if p.causal != 0u {
        return min(p.n_kv, i + p.offset + 1u);
    }
    return p.n_kv;
}

fn kv_at(j: u32, h: u32) -> u32 {
    return (j * p.kv_heads + h / (p.heads / p.kv_heads)) * p.d;
}
