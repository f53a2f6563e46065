//! Values in Mesos's flag formats: byte sizes (`37500KB`) and durations (`50ms`).
use std::{fmt, str::FromStr, time::Duration};

use anyhow::{Context as _, bail};

/// A number of bytes, written as Mesos writes them: a number and a unit, `B`, `KB`,
/// `MB`, `GB` or `TB`, in binary multiples (1KB = 1024B). A bare number is refused,
/// as Mesos refuses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bytes(pub u64);

impl FromStr for Bytes {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        let (number, unit) = split_number(text);
        let multiplier: u64 = match unit {
            "B" => 1,
            "KB" => 1 << 10,
            "MB" => 1 << 20,
            "GB" => 1 << 30,
            "TB" => 1 << 40,
            "" => bail!("'{text}' has no unit; write it like 37500KB (units B, KB, MB, GB, TB)"),
            _ => bail!("'{text}' has an unknown unit '{unit}'; use B, KB, MB, GB or TB"),
        };
        let value: f64 = number
            .parse()
            .with_context(|| format!("'{text}' is not a byte size like 37500KB"))?;
        let bytes = value * multiplier as f64;
        if !bytes.is_finite() || bytes > u64::MAX as f64 {
            bail!("'{text}' is too large");
        }
        Ok(Bytes(bytes.round() as u64))
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}B", self.0)
    }
}

/// A duration in Mesos's format: a number and a unit, `ns`, `us`, `ms`, `secs`,
/// `mins`, `hrs`, `days` or `weeks`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct MesosDuration(pub Duration);

impl FromStr for MesosDuration {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Self> {
        let text = text.trim();
        let (number, unit) = split_number(text);
        let seconds_per_unit = match unit {
            "ns" => 1e-9,
            "us" => 1e-6,
            "ms" => 1e-3,
            "secs" => 1.0,
            "mins" => 60.0,
            "hrs" => 3600.0,
            "days" => 86400.0,
            "weeks" => 604800.0,
            _ => bail!(
                "'{text}' is not a duration like 50ms or 5secs (units ns, us, ms, secs, mins, hrs, days, weeks)"
            ),
        };
        let value: f64 = number
            .parse()
            .with_context(|| format!("'{text}' is not a duration like 50ms or 5secs"))?;
        Duration::try_from_secs_f64(value * seconds_per_unit)
            .map(Self)
            .map_err(|_| anyhow::anyhow!("duration '{text}' is too long"))
    }
}

/// Splits `37500KB` into (`37500`, `KB`).
fn split_number(text: &str) -> (&str, &str) {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    text.split_at(split)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_use_binary_units_like_mesos() {
        assert_eq!("37500KB".parse::<Bytes>().unwrap(), Bytes(38_400_000));
        assert_eq!("2000B".parse::<Bytes>().unwrap(), Bytes(2000));
        assert_eq!("1.5GB".parse::<Bytes>().unwrap(), Bytes(1_610_612_736));
        assert_eq!(
            "12500000000B".parse::<Bytes>().unwrap(),
            Bytes(12_500_000_000),
            "64-bit rates: 100 Gbit/s"
        );
    }

    #[test]
    fn durations_too_long_for_a_duration_are_refused() {
        let error = "999999999999999999991024ms"
            .parse::<MesosDuration>()
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "duration '999999999999999999991024ms' is too long"
        );
    }

    #[test]
    fn bare_numbers_and_unknown_units_are_refused() {
        let bare = "1000".parse::<Bytes>().unwrap_err().to_string();
        assert_eq!(
            bare,
            "'1000' has no unit; write it like 37500KB (units B, KB, MB, GB, TB)"
        );
        let unit = "10kb".parse::<Bytes>().unwrap_err().to_string();
        assert_eq!(
            unit,
            "'10kb' has an unknown unit 'kb'; use B, KB, MB, GB or TB"
        );
        assert!("-5KB".parse::<Bytes>().is_err());
    }

    #[test]
    fn durations_use_mesos_units() {
        assert_eq!(
            "50ms".parse::<MesosDuration>().unwrap().0,
            Duration::from_millis(50)
        );
        assert_eq!(
            "5secs".parse::<MesosDuration>().unwrap().0,
            Duration::from_secs(5)
        );
        assert!("5s".parse::<MesosDuration>().is_err());
    }
}
