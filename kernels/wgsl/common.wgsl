// Shared by every latte kernel (prepended to each source by the wgpu backend).
//
// Dispatches larger than 65535 workgroups in x are folded into y; `flat_id` undoes the fold. A
// kernel must bounds-check the id it computes, since the folded grid can overshoot.

fn flat_group(group: vec3<u32>, groups: vec3<u32>) -> u32 {
    return group.x + group.y * groups.x;
}

fn flat_id(group: vec3<u32>, groups: vec3<u32>, local: u32, size: u32) -> u32 {
    return flat_group(group, groups) * size + local;
}

// The logistic function, written so that neither branch overflows (as the CPU's).
fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        return 1.0 / (1.0 + exp(-x));
    }
    if x < -87.0 {
        return 0.0;
    }
    let e = exp(x);
    return e / (1.0 + e);
}

// erf to about 1e-7 absolute: x·P(x²) below 1, 1 − e^(−x²)·Q(1/x) up to 4, ±1 beyond (the CPU's
// polynomials, evaluated in f32).
fn erf_f32(x: f32) -> f32 {
    let a = abs(x);
    var m: f32;
    if a < 1.0 {
        let u = a * a;
        var p = 1.064867825430355e-6;
        p = p * u - 1.3933770825022732e-5;
        p = p * u + 0.00011960678107173239;
        p = p * u - 0.0008543002244729087;
        p = p * u + 0.005223801571309645;
        p = p * u - 0.02686613821729431;
        p = p * u + 0.11283791378449685;
        p = p * u - 0.3761263889366997;
        p = p * u + 1.1283791670951957;
        m = a * p;
    } else if a < 4.0 {
        let u = 1.0 / a;
        var q = -0.035167748517912406;
        q = q * u + 0.2458236614264731;
        q = q * u - 0.7593179733004817;
        q = q * u + 1.3430751338497988;
        q = q * u - 1.442179046064606;
        q = q * u + 0.8440642766317837;
        q = q * u - 0.04387586429050959;
        q = q * u - 0.2929546102021536;
        q = q * u + 0.004532995213041149;
        q = q * u + 0.5635483716535548;
        q = q * u + 3.437904523839075e-5;
        m = 1.0 - exp(-a * a) * q;
    } else {
        m = 1.0;
    }
    return select(m, -m, x < 0.0);
}

// Round to the nearest f16 value (ties to even), as f32: exact, no shader-f16 needed.
fn round_f16(x: f32) -> f32 {
    let bits = bitcast<u32>(x);
    let sign = bits & 0x80000000u;
    let a = bits & 0x7fffffffu;
    if a >= 0x7f800000u {
        return x; // inf, NaN
    }
    if a >= 0x477ff000u {
        // |x| ≥ 65520: rounds to infinity.
        return bitcast<f32>(sign | 0x7f800000u);
    }
    if a < 0x38800000u {
        // Below the f16 normal range: a multiple of 2^-24, rounded to nearest even.
        let scaled = bitcast<f32>(a) * 16777216.0; // 2^24, exact
        let r = round(scaled); // WGSL round: ties to even
        return bitcast<f32>(sign | bitcast<u32>(r / 16777216.0));
    }
    // Normal: drop 13 mantissa bits, ties to even.
    let rounded = (a + 0x0fffu + ((a >> 13u) & 1u)) & 0xffffe000u;
    return bitcast<f32>(sign | rounded);
}

// Round to the nearest bf16 value (ties to even), as f32; NaN stays NaN.
fn round_bf16(x: f32) -> f32 {
    let bits = bitcast<u32>(x);
    if (bits & 0x7fffffffu) > 0x7f800000u {
        return bitcast<f32>(bits | 0x00400000u);
    }
    return bitcast<f32>((bits + 0x7fffu + ((bits >> 16u) & 1u)) & 0xffff0000u);
}

// tanh that stays finite for any input (some drivers evaluate it through exp(2x) and overflow);
// |x| ≥ 15 is ±1 to f32 precision.
fn tanh_safe(x: f32) -> f32 {
    return tanh(clamp(x, -15.0, 15.0));
}

// The f16 whose bits are the low 16 of `h`, as f32 (exact; `unpack2x16float` needs a capability
// some devices lack).
fn half_to_f32(h: u32) -> f32 {
    let sign = (h & 0x8000u) << 16u;
    let e = (h >> 10u) & 0x1fu;
    let m = h & 0x3ffu;
    if e == 0u {
        // Zero or subnormal: m · 2^-24, exact.
        let v = f32(m) * 5.9604644775390625e-8;
        return select(v, -v, sign != 0u);
    }
    if e == 31u {
        return bitcast<f32>(sign | 0x7f800000u | (m << 13u));
    }
    return bitcast<f32>(sign | ((e + 112u) << 23u) | (m << 13u));
}

// The two f16 values of a word, low half first.
fn halves(word: u32) -> vec2<f32> {
    return vec2<f32>(half_to_f32(word & 0xffffu), half_to_f32(word >> 16u));
}
