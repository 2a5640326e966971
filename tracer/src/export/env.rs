//! Parsers for the value formats of the OpenTelemetry environment variables.

use std::time::Duration;

use anyhow::{Result, bail};

/// Parses a `key1=value1,key2=value2` list (`OTEL_EXPORTER_OTLP_HEADERS`,
/// `OTEL_RESOURCE_ATTRIBUTES`): whitespace around entries, keys and values is trimmed, values
/// are percent-decoded (W3C Baggage style), empty entries are skipped. `name` is the variable,
/// used in errors.
pub fn parse_key_values(name: &str, raw: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for entry in raw.split(',') {
        let entry = entry.trim();
        if entry.is_empty() {
            continue;
        }
        let Some((key, value)) = entry.split_once('=') else {
            bail!("invalid {name} entry \"{entry}\": expected key=value");
        };
        let key = key.trim();
        if key.is_empty() {
            bail!("invalid {name} entry \"{entry}\": empty key");
        }
        let Some(value) = percent_decode(value.trim()) else {
            bail!("invalid {name} entry \"{entry}\": bad percent-encoding in the value");
        };
        out.push((
            percent_decode(key).unwrap_or_else(|| key.to_string()),
            value,
        ));
    }
    Ok(out)
}

/// Decodes `%XX` escapes. `None` for a truncated or non-hex escape or a result that is not
/// UTF-8. `+` stays `+`: the Baggage format is not form encoding.
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Parses a non-negative integer number of milliseconds (the spec's unit for every OTLP and
/// BSP timeout and delay).
pub fn parse_millis(name: &str, raw: &str) -> Result<Duration> {
    match raw.trim().parse::<u64>() {
        Ok(ms) => Ok(Duration::from_millis(ms)),
        Err(_) => bail!("invalid {name} \"{raw}\": expected a whole number of milliseconds"),
    }
}

/// Parses a positive count (queue and batch sizes).
pub fn parse_count(name: &str, raw: &str) -> Result<usize> {
    match raw.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => bail!("invalid {name} \"{raw}\": expected a positive whole number"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_are_trimmed_and_decoded() {
        let kv = parse_key_values(
            "X",
            " api-key = a%20b%2Cc , ,tenant=t1,empty=,eq=a=b,plus=a+b",
        )
        .unwrap();
        assert_eq!(
            kv,
            vec![
                ("api-key".into(), "a b,c".into()),
                ("tenant".into(), "t1".into()),
                ("empty".into(), "".into()),
                ("eq".into(), "a=b".into()),
                ("plus".into(), "a+b".into()),
            ]
        );
    }

    #[test]
    fn bad_key_values_name_the_variable_and_entry() {
        let err = parse_key_values("OTEL_EXPORTER_OTLP_HEADERS", "a=1,novalue").unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid OTEL_EXPORTER_OTLP_HEADERS entry \"novalue\": expected key=value"
        );
        assert!(parse_key_values("X", "=v").is_err());
        assert!(parse_key_values("X", "k=%zz").is_err());
        assert!(parse_key_values("X", "k=%4").is_err());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("%E2%9C%93ok").as_deref(), Some("✓ok"));
        assert_eq!(percent_decode("%ff"), None, "not UTF-8");
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
    }

    #[test]
    fn numbers() {
        assert_eq!(
            parse_millis("T", " 1500 ").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(
            parse_millis("OTEL_BSP_SCHEDULE_DELAY", "1s")
                .unwrap_err()
                .to_string(),
            "invalid OTEL_BSP_SCHEDULE_DELAY \"1s\": expected a whole number of milliseconds"
        );
        assert_eq!(parse_count("Q", "10").unwrap(), 10);
        assert!(parse_count("Q", "0").is_err());
        assert!(parse_count("Q", "-1").is_err());
    }
}
