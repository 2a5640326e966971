//! Stage 5: sampling. Decides which traces are exported, the same way for every span of a
//! trace: a trace that started here is kept or not by its trace id; a trace continued from a
//! remote caller follows the caller's `sampled` flag (parent-based, as OpenTelemetry SDKs do).

use anyhow::{Result, bail};

use crate::span::Span;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sampler {
    AlwaysOn,
    AlwaysOff,
    /// Keeps this fraction of traces, chosen by trace id (consistent across agents).
    TraceIdRatio(f64),
    /// Follows the remote caller's decision; traces started here use the inner sampler.
    ParentBased(RootSampler),
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RootSampler {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
}

impl Default for Sampler {
    /// The OpenTelemetry SDK default: parent-based, always on.
    fn default() -> Self {
        Sampler::ParentBased(RootSampler::AlwaysOn)
    }
}

impl Sampler {
    /// From `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`.
    pub fn from_env(sampler: Option<&str>, arg: Option<&str>) -> Result<Self> {
        let ratio = || -> Result<f64> {
            let Some(arg) = arg else { return Ok(1.0) };
            match arg.trim().parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
                _ => bail!("invalid OTEL_TRACES_SAMPLER_ARG {arg:?}: expected a ratio in [0, 1]"),
            }
        };
        Ok(match sampler.map(str::trim) {
            None | Some("") | Some("parentbased_always_on") => {
                Sampler::ParentBased(RootSampler::AlwaysOn)
            }
            Some("always_on") => Sampler::AlwaysOn,
            Some("always_off") => Sampler::AlwaysOff,
            Some("traceidratio") => Sampler::TraceIdRatio(ratio()?),
            Some("parentbased_always_off") => Sampler::ParentBased(RootSampler::AlwaysOff),
            Some("parentbased_traceidratio") => {
                Sampler::ParentBased(RootSampler::TraceIdRatio(ratio()?))
            }
            Some(other) => bail!(
                "unsupported OTEL_TRACES_SAMPLER {other:?}: expected always_on, always_off, \
                 traceidratio, parentbased_always_on, parentbased_always_off or \
                 parentbased_traceidratio"
            ),
        })
    }

    pub fn keep(&self, span: &Span) -> bool {
        match self {
            Sampler::AlwaysOn => true,
            Sampler::AlwaysOff => false,
            Sampler::TraceIdRatio(r) => by_ratio(&span.trace_id, *r),
            Sampler::ParentBased(root) => match span.remote_sampled {
                Some(sampled) => sampled,
                None => match root {
                    RootSampler::AlwaysOn => true,
                    RootSampler::AlwaysOff => false,
                    RootSampler::TraceIdRatio(r) => by_ratio(&span.trace_id, *r),
                },
            },
        }
    }
}

impl Sampler {
    /// The decision for traces that start here, as a threshold on the low 56 bits of the trace
    /// id (`by_ratio`), for the kernel to set the sampled flag of the traces it starts.
    pub fn root_threshold(&self) -> u64 {
        let ratio = match self {
            Sampler::AlwaysOn | Sampler::ParentBased(RootSampler::AlwaysOn) => return u64::MAX,
            Sampler::AlwaysOff | Sampler::ParentBased(RootSampler::AlwaysOff) => return 0,
            Sampler::TraceIdRatio(r) | Sampler::ParentBased(RootSampler::TraceIdRatio(r)) => *r,
        };
        threshold(ratio)
    }
}

/// Trace ids whose low 56 bits are below this are sampled at `ratio`: the one comparison the
/// kernel (injection) and the agent both make, in integers.
fn threshold(ratio: f64) -> u64 {
    if ratio >= 1.0 {
        return u64::MAX;
    }
    // value < ratio * 2^56  <=>  value < ceil(ratio * 2^56) for integer values.
    (ratio * (1u64 << 56) as f64).ceil() as u64
}

/// The W3C/OTel convention: compare the trace id's low 56 bits (random in W3C level 2
/// trace ids) with the ratio.
fn by_ratio(trace_id: &[u8; 16], ratio: f64) -> bool {
    let mut low = [0u8; 8];
    low[1..].copy_from_slice(&trace_id[9..]);
    u64::from_be_bytes(low) < threshold(ratio)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The threshold the agent and the kernel both compare with (`low56 < threshold`) is
    /// ratio × 2^56 rounded up, worked out here by hand; the sampler decides by it at the
    /// boundary.
    #[test]
    fn the_threshold_is_the_ratio_of_2_to_the_56_rounded_up() {
        let expected = [
            (0.25, 1u64 << 54),
            (0.5, 1 << 55),
            // 2^56 / 10 = 7205759403792793.6
            (0.1, 7_205_759_403_792_794),
            // 2^56 / 100 = 720575940379279.36: below 2^53, where f64 keeps the fraction.
            (0.01, 720_575_940_379_280),
            (0.0, 0),
            (1.0, u64::MAX),
        ];
        for (ratio, threshold) in expected {
            assert_eq!(
                Sampler::TraceIdRatio(ratio).root_threshold(),
                threshold,
                "{ratio}"
            );
        }
        let id = |low: u64| {
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&low.to_be_bytes());
            id
        };
        for (ratio, t) in [(0.25, 1u64 << 54), (0.01, 720_575_940_379_280)] {
            assert!(by_ratio(&id(t - 1), ratio), "{ratio}: {} sampled", t - 1);
            assert!(!by_ratio(&id(t), ratio), "{ratio}: {t} not sampled");
        }
    }

    #[test]
    fn parses_the_standard_names() {
        assert_eq!(Sampler::from_env(None, None).unwrap(), Sampler::default());
        assert_eq!(
            Sampler::from_env(Some("traceidratio"), Some("0.25")).unwrap(),
            Sampler::TraceIdRatio(0.25)
        );
        assert_eq!(
            Sampler::from_env(Some("parentbased_always_off"), None).unwrap(),
            Sampler::ParentBased(RootSampler::AlwaysOff)
        );
        assert!(Sampler::from_env(Some("sometimes"), None).is_err());
        assert!(Sampler::from_env(Some("traceidratio"), Some("2")).is_err());
    }

    #[test]
    fn ratio_is_decided_by_trace_id_and_roughly_proportional() {
        let mut kept = 0;
        for i in 0u64..10_000 {
            let mut id = [0u8; 16];
            // Spread ids over the low 56 bits.
            id[9..]
                .copy_from_slice(&(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 8).to_be_bytes()[1..]);
            if by_ratio(&id, 0.3) {
                kept += 1;
            }
            assert_eq!(by_ratio(&id, 0.3), by_ratio(&id, 0.3));
        }
        assert!((2_700..3_300).contains(&kept), "kept {kept}");
        assert!(by_ratio(&[0xff; 16], 1.0));
        assert!(!by_ratio(&[0; 16], 0.0));
    }
}
