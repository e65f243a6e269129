//! The tests `latte bench --tests` names, parsed once: `ppN`, `tgN`, `img`, `img-dense`, `vae`,
//! `load`.

use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchTest {
    /// Process N prompt tokens in one batch (tokens/s).
    Prompt(usize),
    /// Decode N tokens one at a time (tokens/s).
    Generate(usize),
    /// One image, layerwise: s/image, s/step per group, group-switch cost, peak RSS per phase.
    Image,
    /// One image with every layer every step (`--dense`).
    ImageDense,
    /// One DC-AE decode of a latent (s).
    Vae,
    /// Opening the file and loading every model (s).
    Load,
}

impl FromStr for BenchTest {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let count = |digits: &str| -> Result<usize, String> {
            match digits.parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("'{s}': the token count must be a positive integer")),
            }
        };
        match s {
            "img" => Ok(BenchTest::Image),
            "img-dense" => Ok(BenchTest::ImageDense),
            "vae" => Ok(BenchTest::Vae),
            "load" => Ok(BenchTest::Load),
            _ if s.starts_with("pp") => count(&s[2..]).map(BenchTest::Prompt),
            _ if s.starts_with("tg") => count(&s[2..]).map(BenchTest::Generate),
            _ => Err(format!(
                "unknown test '{s}' (expected ppN, tgN, img, img-dense, vae or load)"
            )),
        }
    }
}

impl fmt::Display for BenchTest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BenchTest::Prompt(n) => write!(f, "pp{n}"),
            BenchTest::Generate(n) => write!(f, "tg{n}"),
            BenchTest::Image => f.write_str("img"),
            BenchTest::ImageDense => f.write_str("img-dense"),
            BenchTest::Vae => f.write_str("vae"),
            BenchTest::Load => f.write_str("load"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in ["pp512", "tg128", "img", "img-dense", "vae", "load", "pp1"] {
            assert_eq!(name.parse::<BenchTest>().unwrap().to_string(), name);
        }
        for bad in ["pp", "pp0", "tgx", "image", "", "pp-3"] {
            assert!(bad.parse::<BenchTest>().is_err(), "{bad}");
        }
    }
}
