//! Detectors decide whether a window aggregate is a breach.

use serde::Serialize;

use super::policy::DetectorSpec;

/// Which side of a threshold a breach was on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Below,
    Above,
}

/// A breach: the aggregate crossed `threshold` on the `direction` side.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Breach {
    pub threshold: f64,
    pub direction: Direction,
}

impl DetectorSpec {
    /// The detector's name as it appears in requests.
    pub fn name(&self) -> &'static str {
        match self {
            DetectorSpec::Threshold { .. } => "threshold",
        }
    }

    /// Evaluates one aggregate; `None` when the value is acceptable.
    pub fn evaluate(&self, value: f64) -> Option<Breach> {
        match *self {
            DetectorSpec::Threshold { below, above } => {
                if let Some(b) = below.filter(|b| value < *b) {
                    return Some(Breach {
                        threshold: b,
                        direction: Direction::Below,
                    });
                }
                above.filter(|a| value > *a).map(|a| Breach {
                    threshold: a,
                    direction: Direction::Above,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threshold_band_breaches_on_either_side_only() {
        let band = DetectorSpec::Threshold {
            below: Some(0.8),
            above: Some(0.95),
        };
        assert_eq!(band.evaluate(0.9), None);
        assert_eq!(band.evaluate(0.8), None, "the bound itself is acceptable");
        assert_eq!(
            band.evaluate(0.7),
            Some(Breach {
                threshold: 0.8,
                direction: Direction::Below
            })
        );
        assert_eq!(
            band.evaluate(0.99),
            Some(Breach {
                threshold: 0.95,
                direction: Direction::Above
            })
        );
        let above_only = DetectorSpec::Threshold {
            below: None,
            above: Some(200.0),
        };
        assert_eq!(above_only.evaluate(-1e9), None);
    }
}
