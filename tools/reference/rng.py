"""The seedable noise generator that the Rust engine reimplements bit for bit.

This module owns the initial-noise specification (README.md, "Noise RNG"). It must not use torch's or
numpy's random generators: the same seed has to give the same latent in every implementation.

Spec:
  * u64 stream: number n (n = 0, 1, 2, ...) of seed s is splitmix64_mix(s + (n + 1) * GAMMA) mod 2**64,
    i.e. exactly what a splitmix64 generator whose state starts at s returns on its (n+1)-th call.
  * normal pair j uses u64 numbers 2j (a) and 2j+1 (b):
        u1 = ((a >> 11) + 1) * 2**-53      in (0, 1]   (never 0, so ln is finite)
        u2 = (b >> 11) * 2**-53            in [0, 1)
        r  = sqrt(-2 ln u1),  theta = 2 pi u2
        normal[2j] = r cos theta,  normal[2j+1] = r sin theta
    all in f64, then each value rounded to nearest f32. An odd count drops the last sine.
  * a latent of shape [C, H, W] is filled in row-major order (channel slowest, column fastest).
  * image b of a batch uses seed + b (wrapping mod 2**64).
"""

import numpy as np

GAMMA = 0x9E3779B97F4A7C15
MIX1 = 0xBF58476D1CE4E5B9
MIX2 = 0x94D049BB133111EB
MASK64 = (1 << 64) - 1


def splitmix64_scalar(seed: int, count: int) -> list[int]:
    """The obviously-correct scalar form (used by the tests to check the vectorised one)."""
    state = seed & MASK64
    out = []
    for _ in range(count):
        state = (state + GAMMA) & MASK64
        z = state
        z = ((z ^ (z >> 30)) * MIX1) & MASK64
        z = ((z ^ (z >> 27)) * MIX2) & MASK64
        out.append(z ^ (z >> 31))
    return out


def splitmix64(seed: int, count: int) -> np.ndarray:
    """u64 numbers 0..count of the stream of `seed` (counter-based, so vectorised)."""
    n = np.arange(1, count + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed & MASK64) + n * np.uint64(GAMMA)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(MIX2)
    return z ^ (z >> np.uint64(31))


def normal_f32(seed: int, count: int) -> np.ndarray:
    """`count` standard normal f32 values of the stream of `seed` (Box-Muller in f64)."""
    pairs = (count + 1) // 2
    raw = splitmix64(seed, 2 * pairs)
    a, b = raw[0::2], raw[1::2]
    scale = 2.0**-53
    u1 = ((a >> np.uint64(11)).astype(np.float64) + 1.0) * scale
    u2 = (b >> np.uint64(11)).astype(np.float64) * scale
    r = np.sqrt(-2.0 * np.log(u1))
    theta = 2.0 * np.pi * u2
    out = np.empty(2 * pairs, dtype=np.float64)
    out[0::2] = r * np.cos(theta)
    out[1::2] = r * np.sin(theta)
    return out[:count].astype(np.float32)


def latent_noise(seed: int, channels: int, height: int, width: int) -> np.ndarray:
    """Initial noise x0 of one image, shape [C, H, W], filled in row-major order."""
    return normal_f32(seed, channels * height * width).reshape(channels, height, width)
