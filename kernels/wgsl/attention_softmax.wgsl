// Pass 2 of attention.wgsl: one workgroup per (query row, head).

@group(0) @binding(1) var<storage, read_write> s: array<f32>;
@group(0) @binding(2) var<storage, read> prev: array<f32>;
@group(0) @binding(3) var<storage, read> gate: array<f32>;
@group(0) @binding(4) var<storage, read_write> readout: array<f32>;

var<workgroup> partial: array<f32, 256>;

// Invocations of this workgroup see each other's writes to `s` after this.
fn sync() {
    storageBarrier();
    workgroupBarrier();
}

fn reduce_max(v: f32, l: u32) -> f32 {
    partial[l] = v;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride = stride >> 1u) {
        if l < stride { partial[l] = max(partial[l], partial[l + stride]); }
        workgroupBarrier();
    }
    let m = partial[0];
    workgroupBarrier();
    return m;
}

fn reduce_sum(v: f32, l: u32) -> f32 {
    partial[l] = v;
    workgroupBarrier();
    for (var stride = 128u; stride > 0u; stride = stride >> 1u) {
        if l < stride { partial[l] = partial[l] + partial[l + stride]; }
        workgroupBarrier();
    }
    let total = partial[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(256)
fn attention_softmax(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let r = wg.x;
    let h = wg.y;
    let i = p.i0 + r;
    let row = (h * p.rows + r) * p.n_kv;
    let seen_cols = visible(i);
    // Block columns this row can see.
    var seen = 0u;
    if seen_cols > p.col0 { seen = min(seen_cols - p.col0, p.n_cols); }
    let block_row = (h * p.n_q + i) * p.n_cols;
    let g = select(0.0, gate[p.gate_off + h], p.has_add != 0u);

    if p.mode == 1u {
        for (var c = l; c < p.n_cols; c += 256u) {
            var v = 0.0;
            if c < seen {
                let at = row + p.col0 + c;
                if p.has_add != 0u { s[at] = s[at] + g * prev[p.prev_off + block_row + c]; }
                v = s[at];
            }
            if p.has_readout != 0u { readout[p.readout_off + block_row + c] = v; }
        }
        sync();
    }

    var m = -3.4028235e38;
    for (var j = l; j < seen_cols; j += 256u) { m = max(m, s[row + j]); }
    m = reduce_max(m, l);
    var total = 0.0;
    for (var j = l; j < seen_cols; j += 256u) {
        let e = exp(s[row + j] - m);
        s[row + j] = e;
        total += e;
    }
    total = reduce_sum(total, l);
    let inv = 1.0 / total;
    for (var j = l; j < seen_cols; j += 256u) { s[row + j] = s[row + j] * inv; }
    sync();

    if p.mode == 2u {
        if p.has_add != 0u {
            for (var c = l; c < seen; c += 256u) {
                let at = row + p.col0 + c;
                s[at] = s[at] + g * prev[p.prev_off + block_row + c];
            }
            sync();
            var sum = 0.0;
            for (var j = l; j < seen_cols; j += 256u) { sum += s[row + j]; }
            let inv2 = 1.0 / reduce_sum(sum, l);
            for (var j = l; j < seen_cols; j += 256u) { s[row + j] = s[row + j] * inv2; }
            sync();
        }
        if p.has_readout != 0u {
            for (var c = l; c < p.n_cols; c += 256u) {
                var v = 0.0;
                if c < seen { v = s[row + p.col0 + c]; }
                readout[p.readout_off + block_row + c] = v;
            }
        }
    }
}
