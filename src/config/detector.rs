//! The `detector` table of a rule: which detector, its parameters, and for
//! control charts the baseline. Each detector is built once here, so that a
//! bad parameter is reported at startup with its key.

use figment::value::{Dict, Tag, Value};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::{figment_error, ConfigError};
use crate::detect::adwin::{Adwin, AdwinParams};
use crate::detect::cusum::Cusum;
use crate::detect::ddm::{Ddm, DdmParams};
use crate::detect::distribution::{DistributionConfig, DistributionDrift};
use crate::detect::ewma::{Ewma, EwmaLimits};
use crate::detect::hddm::{HddmA, HddmAParams};
use crate::detect::page_hinkley::{PageHinkley, PageHinkleyParams};
use crate::detect::shewhart::{Shewhart, WesternElectricRules};
use crate::engine::detector::{BaselineSpec, DetectorSpec, SequentialDetector, SequentialSpec};

/// The detector kinds, as written in `kind`.
pub const KINDS: &[&str] = &[
    "threshold",
    "cusum",
    "ewma",
    "shewhart",
    "page_hinkley",
    "adwin",
    "ddm",
    "hddm_a",
    "distribution",
];

/// In-control average run length used when a chart gives neither `h`/`l`
/// nor `arl0`: about one false alarm per 370 windows, the 3σ chart's.
pub const DEFAULT_ARL0: f64 = 370.0;

/// Longest trailing baseline (8 bytes per window per model).
pub const MAX_TRAILING_WINDOWS: u32 = 10_000;

/// Windows learned before a chart starts judging, when no baseline is given.
pub const DEFAULT_WARMUP_WINDOWS: u32 = 30;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawThreshold {
    below: Option<f64>,
    above: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCusum {
    #[serde(default = "half")]
    k: f64,
    h: Option<f64>,
    arl0: Option<f64>,
    warning: Option<f64>,
    baseline: Option<Dict>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEwma {
    #[serde(default = "tenth")]
    lambda: f64,
    l: Option<f64>,
    arl0: Option<f64>,
    #[serde(default)]
    limits: EwmaLimits,
    warning: Option<f64>,
    baseline: Option<Dict>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShewhart {
    #[serde(default)]
    rules: WesternElectricRules,
    baseline: Option<Dict>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBaseline {
    kind: BaselineKind,
    mean: Option<f64>,
    std: Option<f64>,
    windows: Option<i64>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum BaselineKind {
    Fixed,
    Warmup,
    Trailing,
}

fn half() -> f64 {
    0.5
}

fn tenth() -> f64 {
    0.1
}

/// Compiles the `detector` table at `key`.
pub(super) fn compile(key: &str, mut table: Dict) -> Result<DetectorSpec, ConfigError> {
    let kind_key = format!("{key}.kind");
    let kind = match table.remove("kind") {
        Some(Value::String(_, kind)) => kind,
        Some(_) => return Err(ConfigError::new(kind_key, "must be a string")),
        None => {
            return Err(ConfigError::new(
                kind_key,
                format!("required key is missing (one of: {})", KINDS.join(", ")),
            ))
        }
    };
    let built = |detector: SequentialDetector, baseline: Option<BaselineSpec>| {
        Ok(DetectorSpec::Sequential(Box::new(SequentialSpec {
            prototype: detector,
            baseline,
        })))
    };
    let invalid = |e: &dyn std::fmt::Display| ConfigError::new(key, e.to_string());
    match kind.as_str() {
        "threshold" => threshold(key, parse(key, table)?),
        "cusum" => {
            let raw: RawCusum = parse(key, table)?;
            let h = match (raw.h, raw.arl0) {
                (Some(_), Some(_)) => return Err(both(key, "h", "arl0")),
                (Some(h), None) => h,
                (None, arl0) => {
                    Cusum::decision_interval_for_arl0(raw.k, arl0.unwrap_or(DEFAULT_ARL0))
                        .map_err(|e| invalid(&e))?
                }
            };
            let mut cusum = Cusum::new(0.0, 1.0, raw.k, h).map_err(|e| invalid(&e))?;
            if let Some(fraction) = raw.warning {
                cusum = cusum.with_warning(fraction).map_err(|e| invalid(&e))?;
            }
            built(
                SequentialDetector::Cusum(cusum),
                Some(baseline(key, raw.baseline)?),
            )
        }
        "ewma" => {
            let raw: RawEwma = parse(key, table)?;
            let l = match (raw.l, raw.arl0) {
                (Some(_), Some(_)) => return Err(both(key, "l", "arl0")),
                (Some(l), None) => l,
                (None, arl0) => {
                    Ewma::limit_width_for_arl0(raw.lambda, arl0.unwrap_or(DEFAULT_ARL0), raw.limits)
                        .map_err(|e| invalid(&e))?
                }
            };
            let mut ewma = Ewma::new(0.0, 1.0, raw.lambda, l)
                .map_err(|e| invalid(&e))?
                .with_limits(raw.limits);
            if let Some(fraction) = raw.warning {
                ewma = ewma.with_warning(fraction).map_err(|e| invalid(&e))?;
            }
            built(
                SequentialDetector::Ewma(ewma),
                Some(baseline(key, raw.baseline)?),
            )
        }
        "shewhart" => {
            let raw: RawShewhart = parse(key, table)?;
            let chart = Shewhart::new(0.0, 1.0, raw.rules).map_err(|e| invalid(&e))?;
            built(
                SequentialDetector::Shewhart(chart),
                Some(baseline(key, raw.baseline)?),
            )
        }
        "page_hinkley" => {
            let params: PageHinkleyParams = parse(key, table)?;
            let detector = PageHinkley::new(params).map_err(|e| invalid(&e))?;
            built(SequentialDetector::PageHinkley(detector), None)
        }
        "adwin" => {
            let params: AdwinParams = parse(key, table)?;
            let detector = Adwin::new(params).map_err(|e| invalid(&e))?;
            built(SequentialDetector::Adwin(Box::new(detector)), None)
        }
        "ddm" => {
            let params: DdmParams = parse(key, table)?;
            built(
                SequentialDetector::Ddm(Ddm::new(params).map_err(|e| invalid(&e))?),
                None,
            )
        }
        "hddm_a" => {
            let params: HddmAParams = parse(key, table)?;
            built(
                SequentialDetector::HddmA(HddmA::new(params).map_err(|e| invalid(&e))?),
                None,
            )
        }
        "distribution" => {
            let reference = match table.remove("reference") {
                Some(value) => Some(
                    value
                        .deserialize::<Vec<f64>>()
                        .map_err(|e| figment_error(e, &format!("{key}.reference")))?,
                ),
                None => None,
            };
            let config: DistributionConfig = parse(key, table)?;
            let detector = match reference {
                Some(values) => DistributionDrift::with_reference(&values, config),
                None => DistributionDrift::learning(config),
            }
            .map_err(|e| invalid(&e))?;
            built(SequentialDetector::Distribution(Box::new(detector)), None)
        }
        other => Err(ConfigError::new(
            kind_key,
            format!("{other:?} is not one of: {}", KINDS.join(", ")),
        )),
    }
}

fn parse<T: DeserializeOwned>(key: &str, table: Dict) -> Result<T, ConfigError> {
    Value::Dict(Tag::Default, table)
        .deserialize()
        .map_err(|e| figment_error(e, key))
}

fn both(key: &str, a: &str, b: &str) -> ConfigError {
    ConfigError::new(format!("{key}.{b}"), format!("give {a} or {b}, not both"))
}

fn threshold(key: &str, raw: RawThreshold) -> Result<DetectorSpec, ConfigError> {
    for (name, bound) in [("below", raw.below), ("above", raw.above)] {
        if let Some(value) = bound {
            if !value.is_finite() {
                return Err(ConfigError::new(
                    format!("{key}.{name}"),
                    format!("must be a finite number, got {value}"),
                ));
            }
        }
    }
    match (raw.below, raw.above) {
        (None, None) => Err(ConfigError::new(
            key,
            "a threshold detector needs below and/or above",
        )),
        (Some(below), Some(above)) if below >= above => Err(ConfigError::new(
            format!("{key}.below"),
            format!("below ({below}) must be less than above ({above})"),
        )),
        (below, above) => Ok(DetectorSpec::Threshold { below, above }),
    }
}

fn baseline(key: &str, table: Option<Dict>) -> Result<BaselineSpec, ConfigError> {
    let key = format!("{key}.baseline");
    let Some(table) = table else {
        return Ok(BaselineSpec::Warmup {
            windows: DEFAULT_WARMUP_WINDOWS,
        });
    };
    let raw: RawBaseline = parse(&key, table)?;
    let windows = |min: i64| -> Result<u32, ConfigError> {
        let n = raw
            .windows
            .ok_or_else(|| ConfigError::new(format!("{key}.windows"), "required key is missing"))?;
        super::in_range(&format!("{key}.windows"), n, min)
    };
    let unused = |name: &str, given: bool| {
        if given {
            Err(ConfigError::new(
                format!("{key}.{name}"),
                format!("not used by a {:?} baseline", raw.kind),
            ))
        } else {
            Ok(())
        }
    };
    match raw.kind {
        BaselineKind::Fixed => {
            unused("windows", raw.windows.is_some())?;
            let mean = raw.mean.filter(|m| m.is_finite()).ok_or_else(|| {
                ConfigError::new(format!("{key}.mean"), "a finite number is required")
            })?;
            let std = raw
                .std
                .filter(|s| s.is_finite() && *s > 0.0)
                .ok_or_else(|| {
                    ConfigError::new(format!("{key}.std"), "a finite number > 0 is required")
                })?;
            Ok(BaselineSpec::Fixed { mean, std })
        }
        BaselineKind::Warmup | BaselineKind::Trailing => {
            unused("mean", raw.mean.is_some())?;
            unused("std", raw.std.is_some())?;
            // A standard deviation needs two values; a trailing window is
            // kept per model, so it is bounded.
            let windows = windows(2)?;
            if matches!(raw.kind, BaselineKind::Trailing) && windows > MAX_TRAILING_WINDOWS {
                return Err(ConfigError::new(
                    format!("{key}.windows"),
                    format!(
                        "at most {MAX_TRAILING_WINDOWS} for a trailing baseline, got {windows}"
                    ),
                ));
            }
            Ok(match raw.kind {
                BaselineKind::Warmup => BaselineSpec::Warmup { windows },
                _ => BaselineSpec::Trailing { windows },
            })
        }
    }
}
