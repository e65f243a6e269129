// Activations rounded as the CPU's matmul quantizes them for the weight type's dot partner
// (ggml's vec_dot_type), written back as the f32 values the integer dot products see: q·d.
//   q8_0:  blocks of 32, d = amax/127 (stored f16), q = round-half-away(x/d)
//   (f16 here has f32's exponent range: the CPU scales activations past f16's range by a power of
//   two before quantizing and scales the products back, which is f16's rounding without overflow)
//   q8_k:  blocks of 256, d = max/−127 for the signed element of largest magnitude (f32),
//          q = min(127, round-half-even(x/d))
//   f16, bf16: round to the format (ties to even)
// x is [rows, k] from x_off; out is [rows, k] from 0. One workgroup per block of 256 (q8_k) or
// per 8 blocks of 32 (the others).

struct Params {
    n: u32, // values (rows · k)
    x_off: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

var<workgroup> amax: array<f32, 256>;
var<workgroup> where_max: array<u32, 256>;

fn round_half_away(v: f32) -> f32 {
    let t = trunc(v);
    return select(t, t + sign(v), abs(v - t) >= 0.5);
}

// f16's rounding (11 significant bits, ties to even) over f32's exponent range: values past
// 65504 keep their exponent instead of becoming infinite.
fn round_f16_wide(v: f32) -> f32 {
    let bits = bitcast<u32>(v);
    let a = bits & 0x7fffffffu;
    if a < 0x477ff000u || a >= 0x7f800000u {
        return round_f16(v);
    }
    return bitcast<f32>((bits & 0x80000000u) | ((a + 0x0fffu + ((a >> 13u) & 1u)) & 0xffffe000u));
}

@compute @workgroup_size(256)
fn q8_0(@builtin(workgroup_id) g: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let i = flat_id(g, ng, l, 256u);
    var v = 0.0;
    if i < p.n { v = x[p.x_off + i]; }
    amax[l] = abs(v);
    workgroupBarrier();
    // Max over each aligned run of 32 invocations (one block).
    for (var stride = 16u; stride > 0u; stride = stride >> 1u) {
        if (l % 32u) < stride {
            amax[l] = max(amax[l], amax[l + stride]);
        }
        workgroupBarrier();
    }
    let d = amax[l - l % 32u] / 127.0;
    let id = select(0.0, 1.0 / d, d != 0.0);
    if i < p.n {
        out[i] = round_half_away(v * id) * round_f16_wide(d);
    }
}

@compute @workgroup_size(256)
fn q8_k(@builtin(workgroup_id) g: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let i = flat_id(g, ng, l, 256u);
    var v = 0.0;
    if i < p.n { v = x[p.x_off + i]; }
    amax[l] = abs(v);
    where_max[l] = l;
    workgroupBarrier();
    // The first element of largest magnitude (the CPU's scan keeps the first on ties).
    for (var stride = 128u; stride > 0u; stride = stride >> 1u) {
        if l < stride {
            let a = amax[l];
            let b = amax[l + stride];
            if b > a || (b == a && where_max[l + stride] < where_max[l]) {
                amax[l] = b;
                where_max[l] = where_max[l + stride];
            }
        }
        workgroupBarrier();
    }
    let first = i - l;
    if i >= p.n { return; }
    if amax[0] == 0.0 {
        out[i] = 0.0;
        return;
    }
    let iscale = -127.0 / x[p.x_off + first + where_max[0]];
    out[i] = min(127.0, round(iscale * v)) * (1.0 / iscale);
}

@compute @workgroup_size(256)
fn f16(@builtin(workgroup_id) g: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let i = flat_id(g, ng, l, 256u);
    if i < p.n { out[i] = round_f16_wide(x[p.x_off + i]); }
}

@compute @workgroup_size(256)
fn bf16(@builtin(workgroup_id) g: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) l: u32) {
    let i = flat_id(g, ng, l, 256u);
    if i < p.n { out[i] = round_bf16(x[p.x_off + i]); }
}
