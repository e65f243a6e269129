//! Summary statistics of repeated measurements: mean ± sample standard deviation (as llama-bench
//! prints them), median, min and max.

/// The summary of `n` repetitions of one measurement.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (n − 1 in the denominator); 0 for a single repetition.
    pub std_dev: f64,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    /// `None` for no samples or any non-finite sample.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() || samples.iter().any(|x| !x.is_finite()) {
            return None;
        }
        let n = samples.len();
        let mean = samples.iter().sum::<f64>() / n as f64;
        let std_dev = if n > 1 {
            let ss: f64 = samples.iter().map(|x| (x - mean) * (x - mean)).sum();
            (ss / (n - 1) as f64).sqrt()
        } else {
            0.0
        };
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Summary {
            n,
            mean,
            std_dev,
            median,
            min: sorted[0],
            max: sorted[n - 1],
        })
    }

    /// Rates (tokens/s) from durations: each repetition's `count / seconds`.
    pub fn of_rates(count: f64, seconds: &[f64]) -> Option<Summary> {
        let rates: Vec<f64> = seconds.iter().map(|s| count / s).collect();
        Summary::of(&rates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_sd_median() {
        let s = Summary::of(&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0]).unwrap();
        assert_eq!(s.mean, 5.0);
        // Sample variance: 32 / 7.
        assert!((s.std_dev - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!(s.median, 4.5);
        assert_eq!((s.min, s.max), (2.0, 9.0));
        let one = Summary::of(&[3.0]).unwrap();
        assert_eq!((one.std_dev, one.median), (0.0, 3.0));
        assert!(Summary::of(&[]).is_none());
        assert!(Summary::of(&[1.0, f64::NAN]).is_none());
        let rates = Summary::of_rates(10.0, &[1.0, 2.0]).unwrap();
        assert_eq!(rates.mean, 7.5);
    }
}
