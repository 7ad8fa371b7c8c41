//! Reading one variable's text into its type, each error naming the variable, the problem and the fix:
//! numbers in a range, switches, lists of addresses, a CA file.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use super::ConfigError;

/// `on`/`off` (also `true`/`false`, `1`/`0`).
pub(super) fn switch(name: &str, raw: Option<String>, default: bool) -> Result<bool, ConfigError> {
    match raw
        .as_deref()
        .map(str::trim)
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None => Ok(default),
        Some("on" | "true" | "1" | "yes") => Ok(true),
        Some("off" | "false" | "0" | "no") => Ok(false),
        Some(other) => Err(ConfigError::new(
            name,
            format!("{other:?} is neither on nor off"),
            "set on or off",
        )),
    }
}

/// A comma-separated list, each item parsed by `parse`.
pub(super) fn list<T>(
    name: &str,
    raw: Option<String>,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Vec<T>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    raw.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            parse(item).ok_or_else(|| {
                ConfigError::new(
                    name,
                    format!("{item:?} is not an IP address (with an optional port for DNS servers)"),
                    "give addresses separated by commas, e.g. 10.0.0.2,10.0.0.3:5353,[fd00:ec2::253]:53",
                )
            })
        })
        .collect()
}

/// A name server: an address, port 53 unless given.
pub(super) fn name_server(item: &str) -> Option<SocketAddr> {
    item.parse::<SocketAddr>().ok().or_else(|| {
        item.parse::<IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, 53))
    })
}

pub(super) fn ca_file(raw: Option<String>) -> Result<Option<PathBuf>, ConfigError> {
    let Some(path) = raw.map(PathBuf::from) else {
        return Ok(None);
    };
    if !path.is_file() {
        return Err(ConfigError::new(
            "OPSRELAY_DB_CA_FILE",
            format!("{} is not a readable file", path.display()),
            "package the CA bundle (for RDS: the region's bundle from the RDS documentation) with the function and give its path",
        ));
    }
    Ok(Some(path))
}

pub(super) fn parse_in_range<T>(
    name: &str,
    raw: Option<String>,
    default: T,
    min: T,
    max: T,
) -> Result<T, ConfigError>
where
    T: FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(raw) = raw else {
        return Ok(default);
    };
    match raw.trim().parse::<T>() {
        Ok(value) if value >= min && value <= max => Ok(value),
        _ => Err(ConfigError::new(
            name,
            format!("{raw:?} is not a number from {min} to {max}"),
            format!("set a number from {min} to {max}, or unset it for the default ({default})"),
        )),
    }
}
